"""`vs2 quickstart`: every step of the pipeline on the embedded demo model, offline.

    demo data -> extract -> train -> calibrate -> export -> verify -> eval -> classify

The SAE sees only unlabeled images of the demo's shifted target domain (docs/method.md section 2:
unlabeled in-domain activations); verify and eval use a separate labeled set of that domain.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .artifacts import write_json
from .calibrate import calibrate
from .classify import ClassifyResult, predictions
from .config import (
    CalibrateConfig,
    EvalConfig,
    ExportConfig,
    ExtractConfig,
    ModelSpec,
    QuickstartConfig,
    TrainConfig,
    VerifyConfig,
    to_jsonable,
)
from .demo import data as demo_data
from .errors import Vs2Error
from .evaluate import EvalReport, evaluate
from .export import export
from .extract import extract
from .runtime import contract
from .runtime.preprocess import list_images
from .runtime.session import Vs2Session
from .train import train_sae
from .verify import VerifyReport, verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuickstartResult:
    """What each step of the quickstart gave, and how long it took."""

    workdir: Path
    seconds: dict[str, float]
    """Wall-clock seconds per step."""
    config: dict
    parity: VerifyReport
    """verify's report on the labeled target images."""
    eval: EvalReport
    """eval's report: accuracy with and without steering, and its evidence."""
    classified: ClassifyResult

    def to_json(self) -> dict:
        return {"workdir": str(self.workdir), "config": self.config, "seconds": self.seconds,
                "parity": self.parity.to_dict(), "eval": self.eval.to_dict(),
                "classified": self.classified.to_json()}

    def format(self) -> str:
        return (f"\nparity {self.parity.verdict} ({len(self.parity.images)} images)\n\n"
                f"{self.eval.format()}\n\n{self.classified.format()}\n\n"
                f"all artifacts in {self.workdir}")


def _make_workdir(work: Path) -> None:
    """The work folder, made if missing; a file in its place is refused by name (mkdir's own
    error is a bare errno line)."""
    try:
        work.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise Vs2Error(f"--workdir: expected a folder, got a file ({work} or a parent of "
                       "it)") from None


def run_quickstart(cfg: QuickstartConfig) -> QuickstartResult:
    """Run the flow in cfg.workdir (or a new temporary folder); returns a summary of each step."""
    work = cfg.workdir or Path(tempfile.mkdtemp(prefix="vs2-quickstart-"))
    _make_workdir(work)
    timings: dict[str, float] = {}

    def step(name: str, fn, *args):
        start = time.perf_counter()
        log.info("quickstart: %s", name)
        result = fn(*args)
        timings[name] = round(time.perf_counter() - start, 2)
        log.info("quickstart: %s took %.1f s", name, timings[name])
        return result

    unlabeled = step("data", demo_data.generate_unlabeled, work / "data/unlabeled",
                     cfg.n_unlabeled, "target", cfg.seed)
    val = demo_data.generate_labeled(work / "data/val", cfg.n_val_per_class, "target", cfg.seed + 1)
    demo_data.write_classes(work / contract.CLASSES_FILE)
    model = ModelSpec()
    step("extract", extract, ExtractConfig(unlabeled, work / "acts", model, force=True))
    step("train", train_sae, TrainConfig(work / "acts", work / "sae", cfg.expansion, cfg.k,
                                         cfg.batch_size, cfg.epochs, seed=cfg.seed, force=True))
    step("calibrate", calibrate, CalibrateConfig(work / "acts", work / "sae",
                                                 work / contract.STEERING_FILE, force=True,
                                                 gate=cfg.gate))
    exported = work / "exported/vs2-demo"
    step("export", export, ExportConfig(work / "sae", work / contract.STEERING_FILE, exported, model,
                                        work / contract.CLASSES_FILE, force=True))
    parity = step("verify", verify, VerifyConfig(exported, work, val))
    report = step("eval", evaluate, EvalConfig(exported, val, run=work))
    samples = list_images(val)[:: max(1, len(list_images(val)) // 5)][:5]
    classified = step("classify", predictions, Vs2Session(exported), samples)
    result = QuickstartResult(work, timings, to_jsonable(cfg), parity, report, classified)
    write_json(work / "quickstart_report.json", result.to_json())
    return result
