"""The quickstart's setting, rebuilt step by step so benchmarks can repeat parts of it:
3,000 unlabeled target-domain demo images (seed 0) -> extract once -> an SAE per seed
(expansion 4, k 16, 60 epochs, batch 256: QuickstartConfig's values) -> calibrate -> export.
Evaluation uses 300 labeled target images per class (seed 1), as the quickstart does.
Everything lands under WORK and is reused when present.
"""

from __future__ import annotations

from pathlib import Path

from vs2_export.calibrate import calibrate
from vs2_export.config import (
    CalibrateConfig,
    ExportConfig,
    ExtractConfig,
    ModelSpec,
    QuickstartConfig,
    TrainConfig,
)
from vs2_export.demo import data as demo_data
from vs2_export.export import export
from vs2_export.extract import extract
from vs2_export.runtime import contract
from vs2_export.train import train_sae

QS = QuickstartConfig()


def prepare(work: Path) -> tuple[Path, Path]:
    """WORK/acts (extracted from WORK/data/unlabeled) and WORK/data/val; built once."""
    val = work / "data/val"
    if not (val / demo_data.CLASSES[-1] / f"{QS.n_val_per_class - 1}.png").is_file():
        demo_data.generate_labeled(val, QS.n_val_per_class, "target", QS.seed + 1)
    if not (work / "acts/meta.json").is_file():
        unlabeled = demo_data.generate_unlabeled(work / "data/unlabeled", QS.n_unlabeled,
                                                 "target", QS.seed)
        extract(ExtractConfig(unlabeled, work / "acts", ModelSpec(), force=True))
    demo_data.write_classes(work / contract.CLASSES_FILE)
    return work / "acts", val


def sae_for(work: Path, seed: int) -> Path:
    """WORK/seed-S/sae: the quickstart's SAE recipe with this seed; trained once."""
    sae = work / f"seed-{seed}" / "sae"
    if not (sae / "cfg.json").is_file():
        train_sae(TrainConfig(work / "acts", sae, QS.expansion, QS.k, QS.batch_size, QS.epochs,
                              seed=seed, force=True))
    return sae


def export_for(work: Path, seed: int, gate: str) -> Path:
    """WORK/seed-S/GATE/exported: calibrate with `gate` and export fp32 with the demo classes."""
    sae = sae_for(work, seed)
    folder = work / f"seed-{seed}" / gate
    steering = folder / contract.STEERING_FILE
    calibrate(CalibrateConfig(work / "acts", sae, steering, force=True, gate=gate))
    export(ExportConfig(sae, steering, folder / "exported", ModelSpec(),
                        work / contract.CLASSES_FILE, force=True))
    return folder / "exported"
