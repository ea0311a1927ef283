"""exported/NAME + labeled images -> top-1 accuracy with and without steering, per class, with
the paired evidence for the change (stats.py: exact McNemar, paired bootstrap interval).

Both numbers come from the same exported graph: plain CLIP is the graph run with steer_lambda = 0
(h + 0 v = h, so h_hat = h; docs/method.md section 3), steered VS2 is the graph with its defaults.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import card
from .artifacts import check_output, write_json
from .config import EvalConfig
from .errors import Vs2Error
from .runtime import contract
from .runtime.preprocess import list_images
from .runtime.session import Vs2Session
from .stats import mcnemar_exact, paired_bootstrap_ci

log = logging.getLogger(__name__)


def labeled_images(folder: Path, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    """folder/<class name>/... -> [(path, class index)]; folders must name known classes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise Vs2Error(f"eval: expected a folder of class subfolders at {folder}, found none")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    unknown = [p.name for p in subdirs if p.name not in classes]
    if unknown:
        raise Vs2Error(f"eval: subfolders {unknown[:5]} of {folder} are not classes of the model "
                       f"(expected some of {list(classes)[:10]})")
    items = [(path, classes.index(d.name)) for d in subdirs for path in list_images(d)]
    if not items:
        raise Vs2Error(f"eval: expected images in class subfolders of {folder}, found none")
    return items


def _predict(session: Vs2Session, items: list[tuple[Path, int]], batch: int, skipped: list
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> labels [N], steered predictions [N], plain predictions [N], gate flags [N]."""
    label_of = dict(items)
    labels, steered_pred, plain_pred, flags = [], [], [], []
    for start in tqdm(range(0, len(items), batch), desc="eval", unit="batch", disable=None):
        # The session preprocesses into the kind its graph takes (float32 or uint8 pixels).
        chunk = session.preprocess_paths([p for p, _ in items[start:start + batch]])
        skipped.extend({"path": str(p), "reason": r} for p, r in chunk.skipped)
        if not len(chunk.paths):
            continue
        out = session.run(chunk.pixels)
        steered_pred.append(out[contract.LOGITS].argmax(-1))
        plain_pred.append(session.run(chunk.pixels, lambda_=0.0)[contract.LOGITS].argmax(-1))
        flags.append(out[contract.STEERED])
        labels.append(np.array([label_of[p] for p in chunk.paths]))
    if not labels:
        raise Vs2Error("eval: none of the images could be read")
    return tuple(np.concatenate(a) for a in (labels, steered_pred, plain_pred, flags))


@dataclass(frozen=True)
class ClassRow:
    """One class of an eval: accuracies and the paired evidence for their change."""

    name: str
    n: int
    zero_shot: float
    """Top-1 of plain CLIP (the graph with steer_lambda = 0)."""
    vs2: float
    """Top-1 of VS2 (the graph with its defaults)."""
    wins: int
    """Images VS2 gets right and zero-shot gets wrong."""
    losses: int
    """Images zero-shot gets right and VS2 gets wrong."""
    p_value: float
    """Exact two-sided McNemar p of wins vs losses (stats.mcnemar_exact)."""

    @property
    def delta(self) -> float:
        return self.vs2 - self.zero_shot


@dataclass(frozen=True)
class EvalReport:
    """Zero-shot vs VS2 top-1 on a labeled folder, with the evidence for the change: wins and
    losses, the exact McNemar p and a paired bootstrap interval (stats.py)."""

    n_images: int
    zero_shot_top1: float
    vs2_top1: float
    wins: int
    losses: int
    p_value: float
    """Exact two-sided McNemar p: the chance of a split of discordant images at least this
    lopsided if steering made no difference."""
    delta_ci: tuple[float, float]
    """Paired bootstrap interval of vs2_top1 - zero_shot_top1 (fractions)."""
    ci_level: float
    bootstrap: int
    """Resamples behind delta_ci (seeded: the same images give the same interval)."""
    steered_fraction: float
    """Images whose gate passed (the graph's `steered` output)."""
    changed_predictions: int
    per_class: tuple[ClassRow, ...]
    skipped: tuple[dict, ...] = ()

    @property
    def delta(self) -> float:
        return self.vs2_top1 - self.zero_shot_top1

    def to_dict(self) -> dict:
        """The JSON document (eval_report.json)."""
        data = asdict(self)
        data["delta"] = self.delta
        data["delta_ci"] = list(self.delta_ci)
        data["per_class"] = [{**asdict(r), "delta": r.delta} for r in self.per_class]
        data["skipped"] = list(self.skipped)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        """The table `vs2 eval` prints: per class and overall, then the evidence in words."""
        head = (f"{'class':<20} {'n':>5} {'zero-shot':>9} {'VS2':>7} {'change':>7} {'wins':>5} "
                f"{'losses':>6} {'p':>8}")
        lines = [head]
        for r in self.per_class:
            lines.append(_row(r.name, r.n, r.zero_shot, r.vs2, r.wins, r.losses, r.p_value))
        lines.append(_row("ALL", self.n_images, self.zero_shot_top1, self.vs2_top1, self.wins,
                          self.losses, self.p_value))
        lo, hi = self.delta_ci
        lines.append(f"accuracy change {100 * self.delta:+.2f} points, "
                     f"{100 * self.ci_level:.0f}% CI [{100 * lo:+.2f}, {100 * hi:+.2f}] (paired "
                     f"bootstrap, {self.bootstrap} resamples); exact McNemar p = "
                     f"{_p(self.p_value)} ({self.wins} wins, {self.losses} losses)")
        lines.append(_verdict(self.p_value, self.n_images))
        lines.append(f"steered (gate passed): {100 * self.steered_fraction:.1f}% of images; "
                     f"{self.changed_predictions} predictions changed")
        lines += [f"skipped {s['path']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


def _p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _row(name: str, n: int, zs: float, vs2: float, wins: int, losses: int, p: float) -> str:
    return (f"{name[:20]:<20} {n:>5} {100 * zs:>8.1f}% {100 * vs2:>6.1f}% "
            f"{100 * (vs2 - zs):>+7.1f} {wins:>5} {losses:>6} {_p(p):>8}")


def _verdict(p: float, n: int) -> str:
    if p < 0.05:
        return f"the change is unlikely to be noise (p < 0.05 on {n} images)"
    return (f"on {n} images this change cannot be told from noise (p >= 0.05): evaluate on more "
            "labeled images before trusting it")


def evaluate(cfg: EvalConfig) -> EvalReport:
    """Accuracy of plain CLIP and of VS2 on a labeled folder with its evidence. The report goes
    to cfg.report, or RUN/reports/NAME.eval.json with cfg.run, never into the export folder."""
    path, precision = contract.locate(cfg.exported, cfg.precision)  # a folder or a model file
    out = cfg.report or (contract.report_path(cfg.run, path.parent.name, "eval", precision)
                         if cfg.run else None)
    if out is not None:  # checked before the work: a report must never replace an input
        check_output(out, "--report", (path.parent, cfg.images))
    session = Vs2Session(path, provider=cfg.provider, precision=precision)
    classes = tuple(session.manifest.classes or ())
    if not classes:
        raise Vs2Error(f"eval: {cfg.exported} was exported without classes; export with --classes")
    skipped: list[dict] = []
    labels, vs2, plain, flags = _predict(session, labeled_images(cfg.images, classes),
                                         cfg.batch_size, skipped)
    report = build_report(labels, plain, vs2, flags, classes, cfg.bootstrap, cfg.seed, skipped)
    if out is not None:
        write_json(out, report.to_dict())
    card.record_eval(path.parent, report.to_dict(), Path(cfg.images), session.manifest)
    return report


def build_report(labels: np.ndarray, plain: np.ndarray, vs2: np.ndarray, flags: np.ndarray,
                 classes: tuple[str, ...], bootstrap: int = 2000, seed: int = 0,
                 skipped: list[dict] | tuple = ()) -> EvalReport:
    """Predictions [N] (class indices) and gate flags [N] -> EvalReport."""
    base_ok, new_ok = plain == labels, vs2 == labels
    wins, losses = int((new_ok & ~base_ok).sum()), int((base_ok & ~new_ok).sum())
    per_class = []
    for c, name in enumerate(classes):
        mask = labels == c
        if mask.any():
            w, lo = int((new_ok & ~base_ok & mask).sum()), int((base_ok & ~new_ok & mask).sum())
            per_class.append(ClassRow(name, int(mask.sum()), float(base_ok[mask].mean()),
                                      float(new_ok[mask].mean()), w, lo, mcnemar_exact(w, lo)))
    level = 0.95
    return EvalReport(
        n_images=int(len(labels)), zero_shot_top1=float(base_ok.mean()),
        vs2_top1=float(new_ok.mean()), wins=wins, losses=losses,
        p_value=mcnemar_exact(wins, losses),
        delta_ci=paired_bootstrap_ci(base_ok, new_ok, bootstrap, seed, level), ci_level=level,
        bootstrap=bootstrap, steered_fraction=float(np.mean(flags)),
        changed_predictions=int((plain != vs2).sum()), per_class=tuple(per_class),
        skipped=tuple(skipped))
