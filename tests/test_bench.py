"""`vs2 bench` runs on the tiny demo model and emits a well-formed JSON report and a PNG chart.
It measures, it never asserts speed: timings here are only checked to be positive and finite."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from pipeline import build_export

from vs2_export.bench import bench
from vs2_export.bench.baselines import gemm_ceiling_feeds, gemm_ceiling_model, vit_gflop
from vs2_export.bench.report import BenchReport
from vs2_export.bench.run import GEMM_CEILING, MatMulProbe
from vs2_export.config import BenchConfig, ExportConfig, ModelSpec
from vs2_export.demo.data import generate_unlabeled
from vs2_export.errors import Vs2Error
from vs2_export.export import export
from vs2_export.runtime import contract, openvino_session
from vs2_export.runtime.providers import create_session
from vs2_export.runtime.timing import interleaved

DEMO = ModelSpec("vs2-demo")


@pytest.fixture(scope="module")
def exported(module_tmp):
    work = module_tmp.mktemp("bench")
    images = generate_unlabeled(work / "images", 120, seed=0)
    build_export(work, DEMO, images, ["circle", "square"], k=8, epochs=2)
    out = work / "variants"
    export(ExportConfig(work / "sae", work / "steering.json", out, DEMO, work / "classes.txt",
                        precisions=("int8",), calibration=images))
    return out


def test_bench_emits_wellformed_json_and_png(exported, tmp_path):
    before = {p.name: p.read_bytes() for p in exported.iterdir() if p.is_file()}
    out = tmp_path / "run" / "bench.json"
    report = bench(BenchConfig(exported, batches=(1, 2), runs=2, warmup=0, ablations=True,
                               report=out, run=exported.parent))
    # bench leaves the export as it was (its graphs go to a scratch folder), but for its timings
    # in the model card (card.py: card_records.json and MODEL_CARD.md are rewritten)
    after = {p.name: p.read_bytes() for p in exported.iterdir() if p.is_file()}
    assert set(after) == set(before) and all(contract.shipped(name) for name in after)
    assert {n for n in after if after[n] != before[n]} == {contract.CARD_FILE,
                                                          contract.CARD_RECORDS_FILE}
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(report.to_json())
    names = [r["name"] for r in on_disk["rows"]]
    assert names[0] == "pytorch eager + hook"
    assert {"onnxruntime bare encoder", "onnxruntime fp32", "onnxruntime int8",
            "ablation: full last block"} <= set(names)
    if openvino_session.available():
        assert {"openvino fp32", "openvino int8"} <= set(names)
    ceiling = next(r for r in on_disk["rows"] if r["name"] == f"ablation: {GEMM_CEILING}")
    assert ceiling["embedding_cosine_min"] is None and ceiling["file_mb"] is None
    for row in on_disk["rows"]:
        assert row["session_start_s"] >= 0 and set(row["batches"]) == {"1", "2"}
        assert row is ceiling or row["embedding_cosine_min"] > 0.9, row["name"]
        if row["precision"] == "fp32":
            assert all(0 < st["matmul_rate_share"] < 10 for st in row["batches"].values())
        for stats in row["batches"].values():
            for key in ("median_ms", "p10_ms", "p90_ms", "ms_per_image", "images_per_s",
                        "speedup_vs_ort_fp32", "speedup_vs_pytorch"):
                assert math.isfinite(stats[key]) and stats[key] > 0, (row["name"], key)
            assert stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    fp32 = next(r for r in on_disk["rows"] if r["name"] == "onnxruntime fp32")
    assert fp32["batches"]["1"]["speedup_vs_ort_fp32"] == 1.0 and fp32["embedding_cosine_min"] > 0.9999
    assert on_disk["matmul_2048_gflops"] > 0 and on_disk["threads"] >= 1 and on_disk["rounds"] == 2
    assert on_disk["ort_fusions"]["fp32"]["nodes"] > 0
    text = report.format()
    assert "onnxruntime int8" in text and "MISS" not in text and "target" not in text
    with Image.open(out.with_suffix(".png")) as chart:
        assert chart.format == "PNG" and chart.size[0] > 400


def test_rows_are_timed_interleaved():
    calls = []
    runners = [lambda x, i=i: calls.append((i, len(x))) for i in range(3)]
    times = interleaved(runners, np.zeros((4, 1)), (1, 4), runs=4, warmup=1)
    assert times.shape == (3, 2, 4) and (times > 0).all()
    rounds = [calls[k:k + 6] for k in range(0, 30, 6)]
    every = sorted((i, b) for i in range(3) for b in (1, 4))
    assert all(sorted(r) == every for r in rounds)  # each round: every row at every batch once
    assert len({tuple(r) for r in rounds}) > 1  # in an order that changes from round to round


def test_matmul_probe_times_the_warm_product_of_each_call():
    probe = MatMulProbe(threads=1, n=64)
    for _ in range(5):
        probe(np.zeros(1))
    assert len(probe.seconds) == 5  # one (the second, warm) product timed per call
    assert probe.gflops(3) == pytest.approx(2 * 64**3 / np.median(probe.seconds[-3:]) / 1e9)


def test_load_warning_only_on_a_busy_machine():
    rows = ()
    report = lambda start, end: BenchReport("m", "demo", 2, "cpu", "random", {}, 1, start, end, 2,
                                            1.0, 1.0, 1.0, rows)
    assert report((0.2, 0, 0), (2.3, 0, 0)).load_warning is None  # the bench's own 2 threads
    assert "load average 3.00" in report((3.0, 0, 0), (2.0, 0, 0)).load_warning
    assert "WARNING" in report((0.1, 0, 0), (4.0, 0, 0)).format()


def test_flop_count_matches_the_issue():
    import open_clip
    visual = open_clip.create_model("ViT-B-32").visual
    assert vit_gflop(visual) == pytest.approx(8.82, abs=0.005)
    assert 1 - vit_gflop(visual, cls_only=True) / vit_gflop(visual) == pytest.approx(0.066, abs=0.001)


def test_gemm_ceiling_does_the_towers_matmul_flops():
    """The ceiling row's rate is comparable with the fused graph's only if its graph multiplies
    exactly the matrices vit_gflop(cls_only=True) counts: summed here from ORT's own shapes."""
    import onnx
    import open_clip
    for name in ("ViT-B-32", "ViT-B-16"):
        visual = open_clip.create_model(name).visual
        model, batch = onnx.load_from_string(gemm_ceiling_model(visual)), 2
        model.graph.ClearField("output")  # every product is an output: shapes from ORT's run
        names = [n.output[0] for n in model.graph.node if n.op_type == "MatMul"]
        model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
        session = create_session(model.SerializeToString(), threads=1)
        feeds = gemm_ceiling_feeds(visual, batch)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds),
                       strict=True))
        got |= feeds | {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
        flop = sum(2 * got[n.output[0]].size * got[n.input[1]].shape[-2]  # [.., M, N] x K
                   for n in model.graph.node if n.op_type == "MatMul")
        assert flop / batch / 1e9 == pytest.approx(vit_gflop(visual, cls_only=True), rel=1e-9)


def test_bench_config_is_validated(tmp_path):
    with pytest.raises(Vs2Error, match="batches"):
        BenchConfig(tmp_path, batches=(0,))
    with pytest.raises(Vs2Error, match="provider"):
        BenchConfig(tmp_path, provider="tpu")
