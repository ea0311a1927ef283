"""The export record: what an export was made from, kept in the run folder, never shipped.

    RUN/exports/NAME.json    written by `vs2 export --out .../NAME`, read by verify and bench

The export folder ships to apps; the sources stay with the user. verify must rebuild the PyTorch
reference from those sources, never from the metadata of the file under test (an edited
manifest would then vouch for itself), so export writes down here what it used: the model and
its weights checksum, the SAE folder and checksum, steering.json and its checksum, the
activation store (whose images are the default verify and calibration images), classes,
templates and the export options that change the graph. Paths inside the run folder are stored
relative to it, so a moved run folder still works.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .artifacts import read_json, sha256_file, write_json
from .config import DEMO_MODEL, ModelSpec
from .errors import Vs2Error
from .runtime import contract

log = logging.getLogger(__name__)
FORMAT = "vs2-export-record"


@dataclass(frozen=True)
class ExportRecord:
    """One export's sources (see the module docstring)."""

    export: str
    """The export folder as written (absolute); its name keys the record."""
    model: dict
    """{"name", "pretrained", "weights_sha256"}: what clip.load_clip loaded."""
    sae: str
    sae_checksum: str
    """sae.sae_checksum: weights, the cfg.json fields that change the math, the model weights."""
    steering: str
    steering_sha256: str
    """SHA-256 of the steering.json file."""
    acts: str | None
    """The activation store the SAE and tau came from (its images: default verify images)."""
    classes: list[str] | None
    templates: list[str]
    text_sha256: str | None
    """SHA-256 of the class text embeddings [C, E] float32 export computed (informational)."""
    cls_only: bool
    pixel_input: str
    opset: int
    precisions: list[str]
    int8_mode: str
    created: str

    def model_spec(self) -> ModelSpec:
        name, pretrained = self.model["name"], self.model.get("pretrained")
        return ModelSpec(name, None if name == DEMO_MODEL else pretrained)


def write_record(run: Path, record: ExportRecord) -> Path:
    """RUN/exports/NAME.json, paths relative to RUN where they lie inside it."""
    run = Path(run).resolve()
    data = asdict(record)
    for key in ("sae", "steering", "acts"):
        if data[key] is not None:
            data[key] = _relative(Path(data[key]), run)
    path = contract.record_path(run, Path(record.export).name)
    write_json(path, {"format": FORMAT, **data})
    return path


def make_record(**fields) -> ExportRecord:
    """ExportRecord with the steering file's checksum and the creation time filled in."""
    return ExportRecord(**fields, steering_sha256=sha256_file(Path(fields["steering"])),
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def find_record(run: Path | None, exported: Path) -> tuple[ExportRecord, Path]:
    """(record, run folder) for the export folder `exported`: `run` is the run folder or the
    record file itself. Without `run` there is nothing to rebuild the reference from: refused."""
    if run is None:
        raise Vs2Error(f"expected --run RUN: the run folder `vs2 export` recorded {exported.name}'s "
                       f"sources in (RUN/{contract.RECORDS_DIR}/{exported.name}.json); the "
                       "reference is rebuilt from those sources, never from the file under test")
    run = Path(run)
    if run.is_file():
        return read_record(run), run.resolve().parent.parent
    path = contract.record_path(run, exported.name)
    if not path.is_file():
        others = sorted(p.name for p in (run / contract.RECORDS_DIR).glob("*.json"))
        if len(others) != 1:
            raise Vs2Error(f"expected the export record {path}, found none (records there: "
                           f"{others or 'none'}); pass --run RUN/{contract.RECORDS_DIR}/NAME.json")
        path = run / contract.RECORDS_DIR / others[0]
        log.info("using the run's only export record %s for %s", path, exported)
    return read_record(path), run.resolve()


def read_record(path: Path) -> ExportRecord:
    """A record file -> ExportRecord, paths resolved against its run folder."""
    data = read_json(path, "export record")
    if data.pop("format", None) != FORMAT:
        raise Vs2Error(f"export record {path}: expected format {FORMAT!r}")
    run = Path(path).resolve().parent.parent
    try:
        record = ExportRecord(**data)
    except TypeError as exc:
        raise Vs2Error(f"export record {path}: unexpected or missing keys ({exc})") from None
    if not isinstance(record.model, dict) or not isinstance(record.model.get("name"), str):
        raise Vs2Error(f"export record {path}: expected a model {{name, pretrained, weights_sha256}}")
    paths = {k: str(run / getattr(record, k)) if getattr(record, k) is not None else None
             for k in ("sae", "steering", "acts")}
    return ExportRecord(**{**asdict(record), **paths})


def _relative(path: Path, run: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(run)) if resolved.is_relative_to(run) else str(resolved)
