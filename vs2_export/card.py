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
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .artifacts import atomic_path, write_json
from .runtime import contract
from .runtime.manifest import Manifest

log = logging.getLogger(__name__)

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


def reset(folder: Path, manifest: Manifest | None = None) -> None:
    """A fresh export: no verdicts or timings yet; writes the card from the manifest."""
    write_json(Path(folder) / contract.CARD_RECORDS_FILE, {})
    write_card(folder, manifest)


def record(folder: Path, kind: str, key: str, entry: dict, manifest: Manifest | None = None) -> None:
    """Add what `vs2 verify` / `eval` / `bench` measured (kind) under key, then rewrite the
    card from `manifest`, the one the command's session validated (default: manifest.json,
    validated). A folder without a manifest.json (not an export) is left alone. Best effort:
    the card is a by-product, so a folder it cannot be written in (read-only, a bad manifest
    copy, a bad records file) is one warning, and the command's own verdict and report stand."""
    folder = Path(folder)
    if not (folder / contract.MANIFEST_FILE).is_file():
        return
    try:
        records = read_records(folder)
        entry = {**entry, "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        records.setdefault(kind, {})[key] = entry
        write_json(folder / contract.CARD_RECORDS_FILE, records)
        write_card(folder, manifest)
    except (OSError, ValueError) as exc:  # ValueError: ManifestError of manifest.json
        log.warning("model card of %s not updated (%s); the %s result stands",
                    folder, " ".join(str(exc).split()), kind)


def read_records(folder: Path) -> dict:
    """card_records.json, validated: entries the card cannot show (hand-edited, from another
    version) are dropped with a warning, and an unreadable file starts afresh."""
    path = Path(folder) / contract.CARD_RECORDS_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (ValueError, RecursionError) as exc:  # other OSErrors: record() warns once
        log.warning("%s is unreadable (%s); the card's records start afresh", path, exc)
        return {}
    if not isinstance(data, dict):
        log.warning("%s: expected a JSON object, got %s; the card's records start afresh", path,
                    type(data).__name__)
        return {}
    kept = {kind: {key: e for key, e in entries.items() if _shows(row, e)}
            for kind, row in ROWS.items() if isinstance(entries := data.get(kind), dict)}
    if sum(map(len, kept.values())) != sum(len(v) if isinstance(v, dict) else 1
                                           for v in data.values()):
        log.warning("%s: dropped records the card cannot show (malformed)", path)
    return {kind: entries for kind, entries in kept.items() if entries}


def _shows(row: Callable[[str, dict], str], entry: object) -> bool:
    """Whether `row` renders the record (its fields present, with the types it formats)."""
    try:
        row("key", entry)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return False
    return True


def write_card(folder: Path, manifest: Manifest | None = None) -> Path:
    """Render MODEL_CARD.md from the manifest (default: manifest.json, validated) and
    card_records.json, atomically. The graph's metadata is authoritative: pass the manifest the
    session read from it; manifest.json is only a readable copy."""
    folder = Path(folder)
    if manifest is None:
        manifest = Manifest.from_json((folder / contract.MANIFEST_FILE).read_bytes())
    text = render(manifest.to_dict(), read_records(folder))
    with atomic_path(folder / contract.CARD_FILE) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return folder / contract.CARD_FILE


def render(manifest: dict, records: dict) -> str:
    """A validated manifest (Manifest.to_dict) + card_records.json -> the Markdown card. The
    manifest's `card` is free-form: a section of the wrong type reads as not recorded."""
    card = _obj(manifest.get("card"))
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


def _obj(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _num(value: object, spec: str, scale: float = 1) -> str:
    """A number from the free-form card, formatted; anything else is '?'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(scale * value, spec)
    return "?"


def _source(card: dict, model: dict) -> str:
    m = _obj(card.get("model"))
    return (f"## Source model\n\n- open_clip architecture `{model['id']}`, weights "
            f"`{model['source']}`; residual width {model['width']}, embedding "
            f"{model['embed_dim']}\n- licence: **{m.get('licence', 'unknown')}** "
            f"({m.get('licence_note', 'not recorded: exported before model cards')})\n"
            f"- weights SHA-256 (the loaded state dict, names sorted): "
            f"`{m.get('weights_sha256', 'not recorded')}`\n")


def _sae(card: dict, sae: dict) -> str:
    s = _obj(card.get("sae"))
    data = _obj(s.get("training_data"))
    fvu = _obj(s.get("fvu"))
    images = data.get("images_sha256") or "not recorded (the store lists no images)"
    lines = [f"## Sparse autoencoder\n\n- top-k SAE: d {sae['d']}, n {sae['n']} latents "
             f"(expansion {s.get('expansion', sae['n'] // sae['d'])}), k {sae['k']}; weights "
             f"SHA-256 `{sae['sha256']}`",
             f"- trained on {data.get('count', 'an unrecorded number of')} unlabeled activations "
             f"of `{data.get('model_id', '?')}` (`{data.get('model_source', '?')}`); SHA-256 of "
             f"the store's image list: `{images}`"]
    if fvu:
        lines.append(f"- FVU on those activations: mean {_num(fvu.get('mean'), '.4f')}, median "
                     f"{_num(fvu.get('median', fvu.get('p50')), '.4f')}, p99 "
                     f"{_num(fvu.get('p99'), '.4f')} (measured by `vs2 calibrate`)")
    return "\n".join(lines) + "\n"


def _steering(card: dict, manifest: dict) -> str:
    s, g = manifest["steering"], _obj(card.get("gate"))
    crit = s.get("gate", contract.GATE_FVU)
    lines = [f"## Steering and gate\n\n- VS2: gamma {s['gamma']}, lambda {s['lambda']} "
             "(overridable at run time)",
             f"- gate: `{crit}` = {GATE_FORMULAS.get(crit, crit)}; steer where it is <= tau = "
             f"{s['tau']:.6g}, the {s['quantile']} quantile over "
             f"{g.get('calibration_samples', '?')} calibration activations (the SAE's training "
             "data)"]
    if "pass_rate" in g:
        lines.append(f"- pass rate on those activations: {_num(g['pass_rate'], '.1f', 100)}%; "
                     f"score p50 {_num(g.get('p50'), '.4g')}, p95 {_num(g.get('p95'), '.4g')}, max "
                     f"{_num(g.get('max'), '.4g')} (the runtime's drift monitor compares live "
                     "traffic with these)")
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
    return "\n".join(lines + [_verify_row(key, verify[key]) for key in sorted(verify)]) + "\n"


def _verify_row(key: str, v: dict) -> str:
    return (f"| {v['precision']} | {v['provider']} | **{v['verdict']}** | "
            f"{v['n_images']} | {', '.join(v['failed']) or 'none'} | {v['when']} |")


def _accuracy(evals: dict) -> str:
    if not evals:
        return "## Accuracy (`vs2 eval`)\n\nNot evaluated yet.\n"
    lines = ["## Accuracy (`vs2 eval`)\n",
             "| labeled images | n | zero-shot | VS2 | change | 95% CI | exact McNemar p | steered |",
             "|---|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [_eval_row(key, evals[key]) for key in sorted(evals)]) + "\n"


def _eval_row(key: str, e: dict) -> str:
    lo, hi = e["delta_ci"]
    return (f"| `{key}` | {e['n_images']} | {100 * e['zero_shot_top1']:.2f}% | "
            f"{100 * e['vs2_top1']:.2f}% | {100 * e['delta']:+.2f} | "
            f"[{100 * lo:+.2f}, {100 * hi:+.2f}] | {e['p_value']:.2g} | "
            f"{100 * e['steered_fraction']:.1f}% |")


def _speed(bench: dict) -> str:
    if not bench:
        return "## Speed (`vs2 bench`)\n\nNot measured yet.\n"
    lines = ["## Speed (`vs2 bench`)\n",
             "| provider | threads | row | batch | ms / image | when |", "|---|---|---|---|---|---|"]
    return "\n".join(lines + [_bench_rows(key, bench[key]) for key in sorted(bench)]) + "\n"


def _bench_rows(key: str, b: dict) -> str:
    return "\n".join(f"| {b['provider']} | {b['threads']} | {r['name']} | {r['batch']} | "
                     f"{r['ms_per_image']:.2f} | {b['when']} |" for r in b["rows"])


ROWS = {"verify": _verify_row, "eval": _eval_row, "bench": _bench_rows}
"""card_records.json's kinds -> how one record renders (read_records keeps what renders)."""


def record_verify(folder: Path, report: dict, provider: str, manifest: Manifest | None = None
                  ) -> None:
    """`vs2 verify`'s VerifyReport.to_dict() -> the card's parity table."""
    failed = [c["name"] for c in report.get("checks", []) if not c["passed"]]
    record(folder, "verify", f"{report['precision']}/{provider}",
           {"precision": report["precision"], "provider": provider, "verdict": report["verdict"],
            "n_images": report["n_images"], "failed": failed}, manifest)


def record_eval(folder: Path, report: dict, images: Path, manifest: Manifest | None = None
                ) -> None:
    """`vs2 eval`'s EvalReport.to_dict() -> the card's accuracy table (one row per folder)."""
    keys = ("n_images", "zero_shot_top1", "vs2_top1", "delta", "delta_ci", "p_value", "wins",
            "losses", "steered_fraction")
    record(folder, "eval", str(images), {k: report[k] for k in keys}, manifest)


def record_bench(folder: Path, report: dict, manifest: Manifest | None = None) -> None:
    """`vs2 bench`'s report -> the card's speed table (the rows that are not ablations)."""
    rows = [{"name": r["name"], "batch": int(b), "ms_per_image": s["ms_per_image"]}
            for r in report["rows"] if not r["name"].startswith("ablation")
            for b, s in r["batches"].items()]
    record(folder, "bench", report["provider"], {"provider": report["provider"],
                                                  "threads": report["threads"], "rows": rows},
           manifest)
