"""exported/NAME + labeled images -> top-1 accuracy with and without steering, per class.

Both numbers come from the same exported graph: plain CLIP is the graph run with steer_lambda = 0
(h + 0 v = h, so h_hat = h; docs/method.md section 3), steered VS2 is the graph with its defaults.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .artifacts import write_json
from .config import EvalConfig
from .errors import Vs2Error
from .runtime import contract
from .runtime.preprocess import list_images
from .runtime.session import Vs2Session

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


def evaluate(cfg: EvalConfig) -> dict:
    """Accuracy of plain CLIP and of VS2 on a labeled folder; the report is written to
    cfg.report, or RUN/reports/NAME.eval.json with cfg.run, never into the export folder."""
    path, precision = contract.locate(cfg.exported, cfg.precision)  # a folder or a model file
    session = Vs2Session(path, provider=cfg.provider)
    classes = tuple(session.manifest.classes or ())
    if not classes:
        raise Vs2Error(f"eval: {cfg.exported} was exported without classes; export with --classes")
    skipped: list[dict] = []
    labels, vs2, plain, flags = _predict(session, labeled_images(cfg.images, classes),
                                         cfg.batch_size, skipped)
    per_class = []
    for c, name in enumerate(classes):
        mask = labels == c
        if mask.any():
            per_class.append({"class": name, "n": int(mask.sum()),
                              "zero_shot": float((plain[mask] == c).mean()),
                              "vs2": float((vs2[mask] == c).mean())})
    report = {"n_images": int(len(labels)),
              "zero_shot_top1": float((plain == labels).mean()),
              "vs2_top1": float((vs2 == labels).mean()),
              "steered_fraction": float(flags.mean()),
              "changed_predictions": int((plain != vs2).sum()),
              "per_class": per_class, "skipped": skipped}
    report["delta"] = report["vs2_top1"] - report["zero_shot_top1"]
    # The export folder ships: the report goes to --report, or to the run folder when given.
    out = cfg.report or (contract.report_path(cfg.run, path.parent.name, "eval", precision)
                         if cfg.run else None)
    if out is not None:
        write_json(out, report)
        report["report"] = str(out)
    return report


def format_table(report: dict) -> str:
    """A readable table of an eval report (the CLI prints it)."""
    lines = [f"{'class':<24} {'n':>5} {'zero-shot':>10} {'VS2':>8} {'change':>8}"]
    for row in report["per_class"]:
        lines.append(f"{row['class'][:24]:<24} {row['n']:>5} {100 * row['zero_shot']:>9.1f}% "
                     f"{100 * row['vs2']:>7.1f}% {100 * (row['vs2'] - row['zero_shot']):>+7.1f}")
    lines.append(f"{'ALL':<24} {report['n_images']:>5} {100 * report['zero_shot_top1']:>9.1f}% "
                 f"{100 * report['vs2_top1']:>7.1f}% {100 * report['delta']:>+7.1f}")
    lines.append(f"steered (gate passed): {100 * report['steered_fraction']:.1f}% of images; "
                 f"{report['changed_predictions']} predictions changed")
    return "\n".join(lines)
