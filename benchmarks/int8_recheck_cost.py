"""What the int8 re-check costs (benchmarks/README.md, "int8 that keeps its answers"):
`python benchmarks/int8_recheck_cost.py EXPORTED [ROUNDS]`.

EXPORTED holds model.onnx and model.int8.onnx (random ViT-B-32 weights are fine: only speed is
measured; a re-check already in the file is stripped first). Builds guarded copies of the int8 graph whose margin
re-runs none, about one in eight, or all of the images, and times them against fp32 and plain
int8 in interleaved rounds (runtime.timing.interleaved) at batch 1 and 8. The re-check should
cost one fp32 run per re-run image and nothing else.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from vs2_export.recheck import guarded_model, plain_model, top2_margin
from vs2_export.runtime import contract
from vs2_export.runtime.manifest import Int8RecheckInfo
from vs2_export.runtime.session import Vs2Session
from vs2_export.runtime.timing import interleaved, random_pixels

BATCHES = (1, 8)


def copy_with(exported: Path, model: onnx.ModelProto, out: Path) -> Path:
    """`model` as out/model.int8.onnx, beside the export's int8 manifest and class embeddings."""
    out.mkdir()
    onnx.save(model, str(out / contract.model_file("int8")))
    for name in (contract.manifest_file("int8"), contract.CLASS_EMBEDDINGS_FILE):
        (out / name).write_bytes((exported / name).read_bytes())
    return out / contract.model_file("int8")


def plain(exported: Path) -> onnx.ModelProto:
    return plain_model(onnx.load(str(contract.model_path(exported, "int8"))))


def main() -> None:
    exported, rounds = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10
    fp32 = Vs2Session(contract.model_path(exported, "fp32"), threads=2)
    with tempfile.TemporaryDirectory() as tmp:
        int8 = Vs2Session(copy_with(exported, plain(exported), Path(tmp) / "plain"), threads=2)
        pixels = random_pixels(fp32.manifest, max(BATCHES))
        margins = top2_margin(int8.run(pixels)["logits"])
        order = np.argsort(-margins)  # the closest call last: batch 8 re-runs it alone, batch 1 none
        pixels, margins = pixels[order], margins[order]
        rows = {"fp32": fp32, "int8 plain": int8}
        for label, margin in (("re-check none", 1e-30), ("re-check 1 of 8 (b8), 0 (b1)", margins[-1] * 1.0001),
                              ("re-check all", 1e30)):
            fp32_graph = onnx.load(str(contract.model_path(exported, "fp32")))  # emptied by the guard
            model = guarded_model(plain(exported), fp32_graph, Int8RecheckInfo(float(margin), 0.0, None, None, 0),
                                  contract.PIXEL_VALUES)
            rows[label] = Vs2Session(copy_with(exported, model, Path(tmp) / str(len(rows))), threads=2)
        times = interleaved([s.run for s in rows.values()], pixels, BATCHES, rounds, warmup=2)
    ms = np.median(times, axis=2) / np.array(BATCHES) * 1e3
    print(f"{exported}: median ms per image over {rounds} interleaved rounds (x = fp32 / row)")
    print("| row | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    for label, row in zip(rows, ms, strict=True):
        print(f"| {label} | " + " | ".join(f"{v:.1f} ({ms[0, j] / v:.2f}x)" for j, v in enumerate(row)) + " |")


if __name__ == "__main__":
    main()
