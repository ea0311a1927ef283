"""The model card of an export folder: MODEL_CARD.md (contract.CARD_FILE).

Two sources, both written by runs on this folder's files, nothing copied from docs:

- export-time facts (`export_facts`), kept in the manifest under `card` (so the ONNX metadata
  carries them too): source model and licence, weights checksum, the SAE and the data it was
  trained on, steering and gate parameters, the gate's pass rate on its calibration activations;
- what later commands measured, in card_records.json (contract.CARD_RECORDS_FILE): `vs2
  verify` (verdict per precision and provider), `vs2 eval` (accuracy with its evidence) and
  `vs2 bench` (latency). Each `record` rewrites the records file and then the whole card, both
  atomically, so the card always matches the files beside it. Export starts the records afresh:
  a new graph has not been verified.

No torch here: the weights checksum is clip.weights_sha256, computed once when the CLIP loads
(the same one the manifest's model.weights_sha256 and the export record carry).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .artifacts import atomic_path, write_json
from .runtime import contract

LICENCES = (
    ("openai", "MIT", "OpenAI CLIP weights, released with github.com/openai/CLIP under MIT"),
    ("laion", "MIT", "LAION open_clip weights; their Hugging Face model cards state MIT"),
    ("datacomp", "MIT", "DataComp open_clip weights; their Hugging Face model cards state MIT"),
    ("metaclip", "CC-BY-NC-4.0", "MetaCLIP weights (facebookresearch/MetaCLIP): non-commercial"),
)
"""open_clip pretrained tag prefix -> (licence, where it comes from). Anything else: unknown."""

GATE_FORMULAS = {contract.GATE_FVU: "||h~ - h||^2 / ||h - mu||^2 (FVU, the paper's)",
                 contract.GATE_REL_ERR: "||h~ - h||^2 / ||h||^2 (relative reconstruction error)",
                 contract.GATE_ERR: "||h~ - h||^2 (raw reconstruction error)"}


def licence_of(source: str, model_id: str) -> tuple[str, str]:
    """(licence, note) for a model source as config.ModelSpec.source spells it."""
    if source == "demo":
        return "MIT", "the vs2-export demo model, trained by vs2_export.demo.train_clip"
    if source == "none":
        return "none", "random weights (seeded): no licence, meaningless for accuracy"
    tag = source.lower()
    if Path(source).suffix in (".safetensors", ".pt", ".pth", ".bin") or Path(source).exists():
        return "unknown", f"local checkpoint {source}: check where it came from"
    for prefix, licence, note in LICENCES:
        if tag.startswith(prefix):
            return licence, f"{note} ({model_id}, pretrained={source})"
    return "unknown", f"open_clip pretrained tag {source!r}: not in vs2-export's licence table"


def export_facts(model: dict, sae: dict, steering: Any, weights: str) -> dict:
    """The card's export-time facts. model: id, source; sae: d, n, k, expansion, sha256;
    steering: steering.SteeringParams; weights: clip.weights_sha256 of the CLIP (the manifest's
    model.weights_sha256: the card and the manifest name the weights with one checksum)."""
    licence, note = licence_of(model["source"], model["id"])
    data = dict(steering.data or {})
    return {
        "model": {**model, "licence": licence, "licence_note": note, "weights_sha256": weights},
        "sae": {**sae, "training_data": data, "fvu": dict(steering.fvu_stats)},
        "steering": {"gamma": steering.gamma, "lambda": steering.lambda_},
        "gate": {"criterion": steering.gate, "quantile": steering.quantile, "tau": steering.tau,
                 "calibration_samples": steering.n_samples, **dict(steering.gate_stats or {})},
        "exported_by": f"vs2-export {__version__}",
    }


def reset(folder: Path) -> None:
    """A fresh export: no verdicts or timings yet; writes the card from the manifest."""
    write_json(Path(folder) / contract.CARD_RECORDS_FILE, {})
    write_card(folder)


def record(folder: Path, kind: str, key: str, entry: dict) -> None:
    """Add what `vs2 verify` / `eval` / `bench` measured (kind) under key, then rewrite the
    card. A folder without a manifest.json (not an export) is left alone."""
    folder = Path(folder)
    if not (folder / contract.MANIFEST_FILE).is_file():
        return
    records = read_records(folder)
    entry = {**entry, "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    records.setdefault(kind, {})[key] = entry
    write_json(folder / contract.CARD_RECORDS_FILE, records)
    write_card(folder)


def read_records(folder: Path) -> dict:
    path = Path(folder) / contract.CARD_RECORDS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_card(folder: Path) -> Path:
    """Render MODEL_CARD.md from manifest.json's card and card_records.json, atomically."""
    folder = Path(folder)
    manifest = json.loads((folder / contract.MANIFEST_FILE).read_text(encoding="utf-8"))
    text = render(manifest, read_records(folder))
    with atomic_path(folder / contract.CARD_FILE) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return folder / contract.CARD_FILE


def render(manifest: dict, records: dict) -> str:
    """manifest.json (as a dict) + card_records.json -> the Markdown card."""
    card = manifest.get("card") or {}
    model = manifest["model"]
    parts = [f"# Model card: {model['id']} with VS2 steering\n",
             f"Written by {card.get('exported_by', 'vs2-export')} when this folder was exported "
             f"({manifest['created']}); `vs2 verify`, `vs2 eval` and `vs2 bench` rewrite it with "
             "what they measure here. Every number below comes from a run on this folder's "
             "files.\n",
             _source(card, model), _sae(card, manifest["sae"]), _steering(card, manifest),
             _head(manifest), _parity(records.get("verify", {})),
             _accuracy(records.get("eval", {})), _speed(records.get("bench", {}))]
    return "\n".join(parts)


def _source(card: dict, model: dict) -> str:
    m = card.get("model", {})
    return (f"## Source model\n\n- open_clip architecture `{model['id']}`, weights "
            f"`{model['source']}`; residual width {model['width']}, embedding "
            f"{model['embed_dim']}\n- licence: **{m.get('licence', 'unknown')}** "
            f"({m.get('licence_note', 'not recorded: exported before model cards')})\n"
            f"- weights SHA-256 (the loaded state dict, names sorted): "
            f"`{m.get('weights_sha256', 'not recorded')}`\n")


def _sae(card: dict, sae: dict) -> str:
    s = card.get("sae", {})
    data = s.get("training_data") or {}
    fvu = s.get("fvu") or {}
    images = data.get("images_sha256") or "not recorded (the store lists no images)"
    lines = [f"## Sparse autoencoder\n\n- top-k SAE: d {sae['d']}, n {sae['n']} latents "
             f"(expansion {s.get('expansion', sae['n'] // sae['d'])}), k {sae['k']}; weights "
             f"SHA-256 `{sae['sha256']}`",
             f"- trained on {data.get('count', 'an unrecorded number of')} unlabeled activations "
             f"of `{data.get('model_id', '?')}` (`{data.get('model_source', '?')}`); SHA-256 of "
             f"the store's image list: `{images}`"]
    if fvu:
        lines.append(f"- FVU on those activations: mean {fvu['mean']:.4f}, median "
                     f"{fvu.get('median', fvu.get('p50', float('nan'))):.4f}, p99 "
                     f"{fvu['p99']:.4f} (measured by `vs2 calibrate`)")
    return "\n".join(lines) + "\n"


def _steering(card: dict, manifest: dict) -> str:
    s, g = manifest["steering"], card.get("gate", {})
    crit = s.get("gate", contract.GATE_FVU)
    lines = [f"## Steering and gate\n\n- VS2: gamma {s['gamma']}, lambda {s['lambda']} "
             "(overridable at run time)",
             f"- gate: `{crit}` = {GATE_FORMULAS.get(crit, crit)}; steer where it is <= tau = "
             f"{s['tau']:.6g}, the {s['quantile']} quantile over "
             f"{g.get('calibration_samples', '?')} calibration activations (the SAE's training "
             "data)"]
    if "pass_rate" in g:
        lines.append(f"- pass rate on those activations: {100 * g['pass_rate']:.1f}%; score p50 "
                     f"{g['p50']:.4g}, p95 {g['p95']:.4g}, max {g['max']:.4g} (the runtime's "
                     "drift monitor compares live traffic with these)")
    return "\n".join(lines) + "\n"


def _head(manifest: dict) -> str:
    classes = manifest.get("classes")
    if not classes:
        return "## Zero-shot head\n\nNone: exported without classes (embeddings only).\n"
    shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
    return (f"## Zero-shot head\n\n- {len(classes)} classes: {shown}\n- templates: "
            + ", ".join(f"`{t}`" for t in manifest["templates"])
            + f"; logit scale {manifest['logit_scale']:.4g}\n")


def _parity(verify: dict) -> str:
    if not verify:
        return "## Parity with PyTorch (`vs2 verify`)\n\nNot verified yet.\n"
    lines = ["## Parity with PyTorch (`vs2 verify`)\n",
             "| precision | provider | verdict | images | failed checks | when |", "|---|---|---|---|---|---|"]
    for key in sorted(verify):
        v = verify[key]
        lines.append(f"| {v['precision']} | {v['provider']} | **{v['verdict']}** | "
                     f"{v['n_images']} | {', '.join(v['failed']) or 'none'} | {v['when']} |")
    return "\n".join(lines) + "\n"


def _accuracy(evals: dict) -> str:
    if not evals:
        return "## Accuracy (`vs2 eval`)\n\nNot evaluated yet.\n"
    lines = ["## Accuracy (`vs2 eval`)\n",
             "| labeled images | n | zero-shot | VS2 | change | 95% CI | exact McNemar p | steered |",
             "|---|---|---|---|---|---|---|---|"]
    for key in sorted(evals):
        e = evals[key]
        lo, hi = e["delta_ci"]
        lines.append(f"| `{key}` | {e['n_images']} | {100 * e['zero_shot_top1']:.2f}% | "
                     f"{100 * e['vs2_top1']:.2f}% | {100 * e['delta']:+.2f} | "
                     f"[{100 * lo:+.2f}, {100 * hi:+.2f}] | {e['p_value']:.2g} | "
                     f"{100 * e['steered_fraction']:.1f}% |")
    return "\n".join(lines) + "\n"


def _speed(bench: dict) -> str:
    if not bench:
        return "## Speed (`vs2 bench`)\n\nNot measured yet.\n"
    lines = ["## Speed (`vs2 bench`)\n",
             "| provider | threads | row | batch | ms / image | when |", "|---|---|---|---|---|---|"]
    for key in sorted(bench):
        b = bench[key]
        lines += [f"| {b['provider']} | {b['threads']} | {r['name']} | {r['batch']} | "
                  f"{r['ms_per_image']:.2f} | {b['when']} |" for r in b["rows"]]
    return "\n".join(lines) + "\n"


def record_verify(folder: Path, report: dict, provider: str) -> None:
    """`vs2 verify`'s VerifyReport.to_dict() -> the card's parity table."""
    failed = [c["name"] for c in report.get("checks", []) if not c["passed"]]
    record(folder, "verify", f"{report['precision']}/{provider}",
           {"precision": report["precision"], "provider": provider, "verdict": report["verdict"],
            "n_images": report["n_images"], "failed": failed})


def record_eval(folder: Path, report: dict, images: Path) -> None:
    """`vs2 eval`'s EvalReport.to_dict() -> the card's accuracy table (one row per folder)."""
    keys = ("n_images", "zero_shot_top1", "vs2_top1", "delta", "delta_ci", "p_value", "wins",
            "losses", "steered_fraction")
    record(folder, "eval", str(images), {k: report[k] for k in keys})


def record_bench(folder: Path, report: dict) -> None:
    """`vs2 bench`'s report -> the card's speed table (the rows that are not ablations)."""
    rows = [{"name": r["name"], "batch": int(b), "ms_per_image": s["ms_per_image"]}
            for r in report["rows"] if not r["name"].startswith("ablation")
            for b, s in r["batches"].items()]
    record(folder, "bench", report["provider"], {"provider": report["provider"],
                                                  "threads": report["threads"], "rows": rows})
