"""`vs2 bench` runs on the tiny demo model and emits a well-formed JSON report and a PNG chart.
It measures, it never asserts speed: timings here are only checked to be positive and finite."""

import json
import math

import pytest
from PIL import Image
from pipeline import build_export

from vs2_export.bench import bench
from vs2_export.bench.baselines import vit_gflop
from vs2_export.config import BenchConfig, ExportConfig, ModelSpec
from vs2_export.demo.data import generate_unlabeled
from vs2_export.errors import Vs2Error
from vs2_export.export import export
from vs2_export.runtime import contract

DEMO = ModelSpec("vs2-demo")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    images = generate_unlabeled(work / "images", 120, seed=0)
    build_export(work, DEMO, images, ["circle", "square"], k=8, epochs=2)
    out = work / "variants"
    export(ExportConfig(work / "sae", work / "steering.json", out, DEMO, work / "classes.txt",
                        precisions=("int8",), calibration=images))
    return out


def test_bench_emits_wellformed_json_and_png(exported):
    before = {p.name: p.read_bytes() for p in exported.iterdir() if p.is_file()}
    report = bench(BenchConfig(exported, batches=(1, 2), runs=2, warmup=0, ablations=True,
                               run=exported.parent))
    on_disk = json.loads((exported.parent / "reports" / "variants.bench.json").read_text())
    # bench leaves the export as it was (its graphs go to RUN/cache), but for its timings in
    # the model card (card.py: card_records.json and MODEL_CARD.md are rewritten)
    after = {p.name: p.read_bytes() for p in exported.iterdir() if p.is_file()}
    assert set(after) == set(before) and all(contract.shipped(name) for name in after)
    card_files = {contract.CARD_FILE, contract.CARD_RECORDS_FILE}
    assert {n for n in after if after[n] != before[n]} == card_files
    assert {"model.onnx", "model.int8.onnx", "manifest.json", "manifest.int8.json"} <= set(after)
    assert "| fused fp32 | 1 |" in after[contract.CARD_FILE].decode()
    assert on_disk["rows"][0]["name"] == report["rows"][0]["name"] == "pytorch eager + hook"
    names = [r["name"] for r in on_disk["rows"]]
    assert {"onnx bare encoder", "fused fp32", "fused int8", "ablation: full last block"} <= set(names)
    for row in on_disk["rows"]:
        assert row["session_start_s"] >= 0
        assert set(row["batches"]) == {"1", "2"}
        for stats in row["batches"].values():
            for key in ("median_ms", "p10_ms", "p90_ms", "ms_per_image", "images_per_s",
                        "speedup_vs_pytorch", "cost_vs_encoder", "matmul_rate_share"):
                assert math.isfinite(stats[key]) and stats[key] > 0, (row["name"], key)
    assert on_disk["matmul_2048_gflops"] > 0 and on_disk["threads"] >= 1
    assert on_disk["ort_fusions"]["fp32"]["nodes"] > 0
    assert all(isinstance(t["met"], bool) for t in on_disk["targets"])
    with Image.open(exported.parent / "reports" / "variants.bench.png") as chart:
        assert chart.format == "PNG" and chart.size[0] > 400


def test_flop_count_matches_the_issue():
    import open_clip
    visual = open_clip.create_model("ViT-B-32").visual
    assert vit_gflop(visual) == pytest.approx(8.82, abs=0.005)
    assert 1 - vit_gflop(visual, cls_only=True) / vit_gflop(visual) == pytest.approx(0.066, abs=0.001)


def test_bench_config_is_validated(tmp_path):
    with pytest.raises(Vs2Error, match="batches"):
        BenchConfig(tmp_path, batches=(0,))
    with pytest.raises(Vs2Error, match="provider"):
        BenchConfig(tmp_path, provider="tpu")
