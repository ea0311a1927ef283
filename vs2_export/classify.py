"""exported/NAME + image files -> top classes per image (torch-free: the runtime only).

The rules of `vs2 classify` live here, not in the CLI: unreadable files are skipped and listed;
nothing readable at all is one error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import Vs2Error
from .runtime import contract
from .runtime.preprocess import image_files
from .runtime.session import Vs2Session


@dataclass(frozen=True)
class Prediction:
    """One image's answer."""

    path: str
    top: tuple[tuple[str, float], ...]
    """(class, probability), most likely first."""
    steered: bool
    """Whether the gate let VS2 steer this image (else plain CLIP)."""


@dataclass(frozen=True)
class ClassifyResult:
    """Predictions for the readable files, and why the others were skipped."""

    predictions: tuple[Prediction, ...]
    skipped: tuple[tuple[str, str], ...]
    """(path, reason)."""

    def to_json(self) -> dict:
        return {"predictions": [{"path": p.path, "top": [list(t) for t in p.top],
                                 "steered": p.steered} for p in self.predictions],
                "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped]}

    def format(self) -> str:
        lines = []
        for p in self.predictions:
            best = ", ".join(f"{label} {100 * prob:.1f}%" for label, prob in p.top)
            lines.append(f"{p.path}: {best}{'' if p.steered else '  (gate: plain CLIP)'}")
        lines += [f"skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def predictions(session: Vs2Session, paths: Sequence[Path], top_k: int = 3) -> ClassifyResult:
    """Classify files leniently: unreadable ones come back in .skipped with their reason."""
    result = session.run_paths(paths)
    tops = session.top_k(result.outputs[contract.LOGITS], top_k) if len(result.paths) else []
    steered = result.outputs.get(contract.STEERED, [])
    return ClassifyResult(
        tuple(Prediction(str(p), tuple(t), bool(s))
              for p, t, s in zip(result.paths, tops, steered, strict=True)),
        tuple((str(p), r) for p, r in result.skipped))


def classify(exported: Path, images: Sequence[Path], top_k: int = 3, provider: str = "cpu",
             precision: str | None = None, classes: Sequence[str] | None = None,
             templates: Sequence[str] | None = None) -> ClassifyResult:
    """`vs2 classify`: files or folders of images, with an export folder or one model file in it.
    A folder is never half-classified silently: unreadable files are listed; when none can be
    read, that is one error naming the first reasons. classes: names to classify into instead
    of the export's, through its text graph (no re-export)."""
    if not 1 <= top_k <= 1000:
        raise Vs2Error(f"top: expected an int in [1, 1000], got {top_k}")
    if templates and classes is None:  # the export's classes were embedded with its own
        raise Vs2Error("template: applies to --classes only (the export's class embeddings were "
                       "made with its templates at export time); pass --classes too")
    files, refused = image_files(images)
    path, precision = contract.locate(exported, precision)
    session = Vs2Session(path, provider=provider, precision=precision)  # bf16: computed as asked
    if classes is not None:
        session.set_classes(list(classes), templates)
    result = predictions(session, files, top_k) if files else ClassifyResult((), ())
    result = ClassifyResult(result.predictions,
                            result.skipped + tuple((str(p), r) for p, r in refused))
    if not result.predictions:
        reasons = "; ".join(f"{path}: {reason}" for path, reason in result.skipped[:3])
        more = "; ..." if len(result.skipped) > 3 else ""
        raise Vs2Error(f"classify: none of the {len(files) + len(refused)} images could be read "
                       f"({reasons or 'no image files found'}{more})")
    return result
