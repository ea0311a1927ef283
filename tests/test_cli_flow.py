"""The whole CLI flow on the embedded demo model, the way a user types it (issue: pipeline)."""

import json
import shutil

import pytest
from pipeline import tamper_one_weight
from typer.testing import CliRunner

from vs2_export.cli import app
from vs2_export.demo import data as demo_data

runner = CliRunner()


def vs2(*args: str, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    work = tmp_path_factory.mktemp("flow")
    unlabeled = demo_data.generate_unlabeled(work / "unlabeled", 400, "target", seed=3)
    val = demo_data.generate_labeled(work / "val", 6, "target", seed=4)
    demo_data.write_classes(work / "classes.txt")
    vs2("extract", "--images", unlabeled, "--out", work / "acts")
    vs2("train", "--acts", work / "acts", "--out", work / "sae", "--k", 16, "--epochs", 10,
        "--batch-size", 128)
    vs2("calibrate", "--acts", work / "acts", "--sae", work / "sae", "--out",
        work / "steering.json")
    vs2("export", "--sae", work / "sae", "--steering", work / "steering.json", "--classes",
        work / "classes.txt", "--out", work / "exported")
    return work, val


def test_verify_passes_and_writes_a_report(flow):
    work, val = flow
    result = vs2("verify", work / "exported", "--images", val, "--json")
    assert json.loads(result.output)["verdict"] == "PASS"
    assert json.loads((work / "exported" / "parity_report.json").read_text())["verdict"] == "PASS"


def test_verify_fails_on_a_tampered_graph(flow, tmp_path):
    work, val = flow
    shutil.copytree(work / "exported", tmp_path / "tampered")
    tamper_one_weight(tmp_path / "tampered" / "model.onnx", "conv1")
    result = vs2("verify", tmp_path / "tampered", "--images", val, code=1)
    assert "parity FAIL" in result.output and "embedding" in result.output


def test_classify_prints_top_classes(flow):
    work, val = flow
    image = next((val / demo_data.CLASSES[0]).iterdir())
    result = vs2("classify", work / "exported", image, "--top", 2, "--json")
    prediction = json.loads(result.output)["predictions"][0]
    assert len(prediction["top"]) == 2 and prediction["top"][0][0] in demo_data.CLASSES


def test_eval_reports_both_accuracies_per_class(flow):
    work, val = flow
    result = vs2("eval", work / "exported", "--images", val)
    assert "zero-shot" in result.output and "ALL" in result.output
    report = json.loads((work / "exported" / "eval_report.json").read_text())
    assert report["n_images"] == 6 * len(demo_data.CLASSES)
    assert 0 <= report["zero_shot_top1"] <= 1 and len(report["per_class"]) == len(demo_data.CLASSES)
    assert "McNemar p =" in result.output and "CI [" in result.output
    assert report["wins"] + report["losses"] <= report["n_images"] and 0 <= report["p_value"] <= 1
    low, high = report["delta_ci"]
    assert low <= report["delta"] <= high


def test_existing_outputs_are_not_overwritten_without_force(flow):
    work, _ = flow
    result = vs2("calibrate", "--acts", work / "acts", "--sae", work / "sae", "--out",
                 work / "steering.json", code=2)
    assert "--force" in result.output


def test_quickstart_runs_end_to_end(tmp_path):
    result = vs2("quickstart", "--workdir", tmp_path, "--n-unlabeled", 300, "--epochs", 5,
                 "--n-val-per-class", 6)
    assert "parity PASS" in result.output and "ALL" in result.output
    assert "McNemar p =" in result.output  # the change comes with its evidence
    assert (tmp_path / "exported" / "vs2-demo" / "model.onnx").is_file()
