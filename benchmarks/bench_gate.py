"""Does the gate catch out-of-domain input? Gate criteria compared on the demo model:

    python benchmarks/bench_gate.py WORK [--seeds 0 1 2] [--n-ood 1000] [--readme]

In-domain: 3,000 held-out labeled target images (demo_sae.py, seed 1). Out of domain: 1,000
images each of vs2_export/demo/ood.py's sets (the demo's source domain, white noise, shape-less
textures, photo-like 1/f scenes; seed 0). For each SAE seed (the quickstart's recipe) and each
criterion:

- AUROC of the score, in-domain vs each OOD set (threshold-free);
- tau = q-quantile (0.99) of the score on the SAE's training activations, as `vs2 calibrate`
  ships it: pass rates of held-out in-domain images and of each OOD set, top-1 change against
  zero-shot in-domain and on the (labeled) source domain;
- OOD pass rates at the SAME held-out in-domain pass rate (95%), which compares criteria
  whose training-quantile tau let different shares of in-domain images through;
- for the shipped default, what the runtime's GateMonitor says on a stream of each set.

Criteria: fvu, rel_err, err are contract.GATE_CRITERIA, scored by steering.gate_score (the
graph's definition). dist, maha and maha x rel_err are measured here only: they need the
training mean / covariance of h in the graph (a d x d matrix), which no export carries.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from demo_sae import QS, prepare, sae_for

from vs2_export.clip import ClipHead, ClipTrunk, load_clip
from vs2_export.config import CalibrateConfig, ModelSpec
from vs2_export.demo import data as demo_data
from vs2_export.demo.ood import render_ood
from vs2_export.runtime import GateMonitor, contract
from vs2_export.runtime.preprocess import list_images, load_image, preprocess_image
from vs2_export.sae import load_sae
from vs2_export.stats import auroc
from vs2_export.steering import gate_score, steer
from vs2_export.store import ActivationStore
from vs2_export.zeroshot import class_embeddings

README = Path(__file__).with_name("README.md")
OOD = ("source", "noise", "texture", "photo")
SHIPPED = contract.GATE_CRITERIA
EXTRA = ("dist", "maha", "maha x rel_err")
MATCHED = 0.95


@torch.no_grad()
def activations(work: Path, val: Path, n_ood: int) -> dict[str, np.ndarray]:
    """h [N, d] per set (cached in WORK/gate_h.npz), labels for the labeled sets."""
    cache = work / "gate_h.npz"
    if cache.is_file():
        return dict(np.load(cache))
    clip = load_clip(ModelSpec())
    trunk = ClipTrunk(clip.model.visual).eval()
    spec = clip.preprocess

    def run(images) -> np.ndarray:
        out = [trunk(torch.from_numpy(np.stack([preprocess_image(im, spec) for im in chunk])))
               for chunk in _chunks(images, 256)]
        return torch.cat(out).numpy()

    paths = list_images(val)
    sets = {"in-domain": run(load_image(p) for p in paths),
            "in-domain_y": np.array([demo_data.CLASSES.index(p.parent.name) for p in paths])}
    for kind in OOD:
        sets[kind] = run(render_ood(kind, 0, i) for i in range(n_ood))
    sets["source_y"] = np.arange(n_ood) % len(demo_data.CLASSES)
    np.savez(cache, **sets)
    return sets


def _chunks(items, size):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Scorer:
    """Every criterion's score for h [N, d] under one SAE (extras fit on its training h)."""

    def __init__(self, sae, train: np.ndarray):
        self.sae = sae
        h = train.astype(np.float64)
        self.mu = h.mean(0)
        self.prec = np.linalg.inv(np.cov(h.T) + 1e-6 * np.eye(h.shape[1]))
        base = self.score_all(train, extras=False)
        self.norm = {"maha": self._maha(h).mean(), "rel_err": base["rel_err"].mean()}

    def _maha(self, h: np.ndarray) -> np.ndarray:
        c = h - self.mu
        return np.einsum("bi,ij,bj->b", c, self.prec, c)

    @torch.no_grad()
    def score_all(self, h_np: np.ndarray, extras: bool = True) -> dict[str, np.ndarray]:
        h = torch.from_numpy(h_np).float()
        h_tilde = self.sae(h)
        out = {c: gate_score(c, h, h_tilde, self.sae.mu).double().numpy() for c in SHIPPED}
        if extras:
            out["dist"] = (h - self.sae.mu).pow(2).sum(-1).double().numpy()
            out["maha"] = self._maha(h_np.astype(np.float64))
            out["maha x rel_err"] = (np.log(out["maha"] / self.norm["maha"])
                                     + np.log(out["rel_err"] / self.norm["rel_err"]))
        return out


@torch.no_grad()
def predictions(h_np: np.ndarray, sae, head, text) -> tuple[np.ndarray, np.ndarray]:
    """(zero-shot, steered-if-passed) top-1 [N] each; the gate is applied by the caller."""
    h = torch.from_numpy(h_np).float()
    s = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    moved = steer(h, sae, s(1.5), s(2.1), s(float("inf"))).h
    logits = [F.normalize(head(x), dim=-1) @ text.T for x in (h, moved)]
    return logits[0].argmax(-1).numpy(), logits[1].argmax(-1).numpy()


def one_seed(work: Path, seed: int, sets: dict, head, text) -> dict:
    sae, _ = load_sae(sae_for(work, seed))
    train = ActivationStore(work / "acts").take(np.arange(QS.n_unlabeled))
    scorer = Scorer(sae, train)
    train_s = scorer.score_all(train)
    scores = {k: scorer.score_all(sets[k]) for k in ("in-domain", *OOD)}
    preds = {k: predictions(sets[k], sae, head, text) for k in ("in-domain", "source")}
    q = CalibrateConfig.quantile
    result = {}
    for crit in (*SHIPPED, *EXTRA):
        tau = np.quantile(train_s[crit], q)
        tau95 = np.quantile(scores["in-domain"][crit], MATCHED)
        row = {"auroc": {k: auroc(scores["in-domain"][crit], scores[k][crit]) for k in OOD},
               "pass": {k: float((scores[k][crit] <= tau).mean()) for k in ("in-domain", *OOD)},
               "pass_matched": {k: float((scores[k][crit] <= tau95).mean()) for k in OOD},
               "above_max": {k: float((scores[k][crit] > train_s[crit].max()).mean())
                             for k in ("in-domain", *OOD)}}
        for name, y in (("in-domain", sets["in-domain_y"]), ("source", sets["source_y"])):
            plain, moved = preds[name]
            chosen = np.where(scores[name][crit] <= tau, moved, plain)
            row.setdefault("delta", {})[name] = float((chosen == y).mean() - (plain == y).mean())
        result[crit] = row
    result["monitor"] = monitor_rows(train_s[CalibrateConfig.gate], scores, q)
    return result


def monitor_rows(train: np.ndarray, scores: dict, q: float) -> dict:
    """The runtime's GateMonitor fed each set as a stream, calibrated like `vs2 calibrate`."""
    tau = np.quantile(train, q)
    stats = {"pass_rate": float((train <= tau).mean()), "max": float(train.max()),
             **{n: float(np.quantile(train, p)) for n, p in (("p50", .5), ("p95", .95))}}
    rows = {}
    for name in ("in-domain", *OOD):
        s = scores[name][CalibrateConfig.gate]
        mon = GateMonitor(stats, window=len(s))
        mon.observe({contract.GATE_SCORE: s, contract.STEERED: s <= tau})
        summary = mon.summary()
        rows[name] = {"pass_rate": summary.pass_rate, "median": summary.quantiles["p50"],
                      "ood_fraction": summary.ood_fraction, "alarms": len(summary.alarms)}
    rows["calibrated"] = stats
    return rows


def _cell(values: list[float], pct: bool = False, signed: bool = False) -> str:
    """Mean over seeds, with the range when the seeds differ."""
    k = 100 if pct else 1
    fmt = (lambda v: f"{k * v:+.1f}") if signed else ((lambda v: f"{k * v:.1f}") if pct
                                                      else (lambda v: f"{v:.3f}"))
    mean = fmt(float(np.mean(values)))
    if len(values) > 1 and fmt(min(values)) != fmt(max(values)):
        return f"{mean} ({fmt(min(values))}..{fmt(max(values))})"
    return mean


def tables(runs: list[dict]) -> str:
    crits = (*SHIPPED, *EXTRA)
    get = lambda crit, *keys: [_dig(r[crit], keys) for r in runs]  # noqa: E731
    out = ["**AUROC** (in-domain held-out vs each set; 1 = perfectly separated)\n",
           "| criterion | source domain | noise | textures | photo-like |", "|---|---|---|---|---|"]
    out += [f"| {_name(c)} | " + " | ".join(_cell(get(c, "auroc", k)) for k in OOD) + " |"
            for c in crits]
    out += ["", f"**As shipped**: tau = q-quantile ({CalibrateConfig.quantile}) of the score on "
            "the SAE's training activations. Pass rates in % (lower is better out of domain); "
            "top-1 change in points against zero-shot\n",
            "| criterion | in-domain held-out pass | source pass | noise pass | textures pass | "
            "photo-like pass | in-domain top-1 change | source top-1 change |",
            "|---|---|---|---|---|---|---|---|"]
    out += [f"| {_name(c)} | " + " | ".join(
        [_cell(get(c, "pass", k), pct=True) for k in ("in-domain", *OOD)]
        + [_cell(get(c, "delta", k), pct=True, signed=True) for k in ("in-domain", "source")])
        + " |" for c in crits]
    out += ["", f"**At the same in-domain pass rate** ({100 * MATCHED:.0f}% of the held-out "
            "in-domain images pass): OOD pass rates in %\n",
            "| criterion | source | noise | textures | photo-like |", "|---|---|---|---|---|"]
    out += [f"| {_name(c)} | " + " | ".join(_cell(get(c, "pass_matched", k), pct=True)
                                           for k in OOD) + " |" for c in crits]
    out += ["", f"**Runtime monitor** on the default gate (`{CalibrateConfig.gate}`): each set "
            "as one stream through `GateMonitor` (window = the whole set)\n",
            "| stream | pass rate | median score | above the training max | drift alarms |",
            "|---|---|---|---|---|"]
    for name in ("in-domain", *OOD):
        m = [r["monitor"][name] for r in runs]
        out.append(f"| {name} | {_cell([x['pass_rate'] for x in m], pct=True)}% | "
                   f"{_cell([x['median'] for x in m])} | "
                   f"{_cell([x['ood_fraction'] for x in m], pct=True)}% | "
                   f"{_alarms([x['alarms'] for x in m])} |")
    cal = [r["monitor"]["calibrated"] for r in runs]
    out.append(f"\nCalibrated: pass rate {_cell([c['pass_rate'] for c in cal], pct=True)}%, "
               f"p50 {_cell([c['p50'] for c in cal])}, p95 {_cell([c['p95'] for c in cal])}, "
               f"max {_cell([c['max'] for c in cal])}.")
    return "\n".join(out)


def _alarms(counts: list[int]) -> str:
    """Drift rules failing (of the monitor's two), over seeds."""
    if not any(counts):
        return "none"
    return " / ".join(f"{c} of 2" for c in counts) + " (per seed)"


def _dig(d: dict, keys: tuple) -> float:
    for k in keys:
        d = d[k]
    return d


def _name(crit: str) -> str:
    shipped = crit in SHIPPED
    label = f"`{crit}`" if shipped else f"{crit} (not shipped)"
    return f"**{label}** (default)" if crit == CalibrateConfig.gate else label


def append_readme(text: str, command: str, seeds: list[int]) -> None:
    section = (
        "\n## Reliability gate: which score catches out-of-domain input (issue 12)\n\n"
        "The paper's FVU divides the reconstruction error by ||h - mu||^2, so an input far from "
        "the data gets a small FVU and is steered. Criteria compared on the demo model, SAE "
        f"seeds {', '.join(map(str, seeds))} (the quickstart's recipe); each cell is the mean "
        "over seeds with the range in brackets. In-domain: 3,000 held-out labeled target images. "
        "Out of domain (`vs2_export/demo/ood.py`, 1,000 each): the demo's source domain "
        "(clean shapes, labeled: its top-1 change shows what steering does to OOD input that "
        "passes), white noise, textures without shapes, photo-like 1/f landscapes (no real "
        "photos offline).\n\n"
        "- `fvu`: ||h~ - h||^2 / ||h - mu||^2 (paper); `rel_err`: ||h~ - h||^2 / ||h||^2; "
        "`err`: ||h~ - h||^2; dist: ||h - mu||^2; maha: Mahalanobis distance of h under the "
        "training mean and covariance; maha x rel_err: the sum of both logs, each over its "
        "training mean.\n\n"
        f"    {command}\n\n{text}\n\nMeasured {time.strftime('%Y-%m-%d')}.\n")
    with open(README, "a", encoding="utf-8") as fh:
        fh.write(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-ood", type=int, default=1000)
    parser.add_argument("--readme", action="store_true", help="append the tables to benchmarks/README.md")
    args = parser.parse_args()
    _, val = prepare(args.work)
    sets = activations(args.work, val, args.n_ood)
    clip = load_clip(ModelSpec())
    head = ClipHead(clip.model.visual).eval()
    text = class_embeddings(clip, demo_data.CLASSES, ("a photo of a {}.",))
    runs = [one_seed(args.work, s, sets, head, text) for s in args.seeds]
    (args.work / "gate.json").write_text(json.dumps(runs, indent=2))
    text_out = tables(runs)
    print(text_out)
    if args.readme:
        seeds = " ".join(map(str, args.seeds))
        append_readme(text_out, f"python benchmarks/bench_gate.py WORK --seeds {seeds} "
                                f"--n-ood {args.n_ood} --readme", args.seeds)


if __name__ == "__main__":
    main()
