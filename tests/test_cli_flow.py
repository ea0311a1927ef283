"""The whole CLI flow on the embedded demo model, the way a user types it (issue: pipeline)."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from pipeline import tamper_one_weight
from typer.testing import CliRunner

from vs2_export.cli import app
from vs2_export.demo import data as demo_data
from vs2_export.runtime import contract

runner = CliRunner()


def vs2(*args: str, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def flow(module_tmp):
    work = module_tmp.mktemp("flow")
    unlabeled = demo_data.generate_unlabeled(work / "unlabeled", 400, "target", seed=3)
    val = demo_data.generate_labeled(work / "val", 6, "target", seed=4)
    demo_data.write_classes(work / "classes.txt")
    vs2("extract", "--images", unlabeled, "--out", work / "acts", "--model", "vs2-demo")
    vs2("train", "--acts", work / "acts", "--out", work / "sae", "--k", 16, "--epochs", 10,
        "--batch-size", 128)
    vs2("calibrate", "--acts", work / "acts", "--sae", work / "sae", "--out",
        work / "steering.json")
    vs2("export", "--sae", work / "sae", "--steering", work / "steering.json", "--classes",
        work / "classes.txt", "--out", work / "exported")
    return work, val


def test_verify_passes_and_writes_a_report(flow):
    work, val = flow
    result = vs2("verify", work / "exported", "--run", work, "--images", val, "--json")
    assert json.loads(result.stdout)["verdict"] == "PASS"
    assert json.loads((work / "reports" / "exported.verify.json").read_text())["verdict"] == "PASS"


def test_verify_defaults_to_the_stores_own_images(flow):
    """No --images: the images the SAE's activation store was extracted from (meta.json)."""
    work, _ = flow
    report = json.loads(vs2("verify", work / "exported", "--run", work, "--max-images", 20,
                            "--json").stdout)
    assert report["verdict"] == "PASS" and report["n_images"] == 20
    assert all("unlabeled" in p for p in report["images"])


def test_verify_fails_on_a_tampered_graph_and_prints_the_json(flow, tmp_path):
    work, val = flow
    shutil.copytree(work / "exported", tmp_path / "tampered")
    tamper_one_weight(tmp_path / "tampered" / "model.onnx", "conv1")
    result = vs2("verify", tmp_path / "tampered", "--run", work / "exports" / "exported.json",
                 "--images", val, "--json", code=1)
    report = json.loads(result.stdout)  # --json prints the report on failure too
    assert report["verdict"] == "FAIL"
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("vs2: parity FAIL") and "embedding.cosine_min" in line
    assert ".png" in line  # the failing images are named


def test_classify_prints_top_classes(flow):
    work, val = flow
    image = next((val / demo_data.CLASSES[0]).iterdir())
    result = vs2("classify", work / "exported", image, "--top", 2, "--json")
    prediction = json.loads(result.stdout)["predictions"][0]
    assert len(prediction["top"]) == 2 and prediction["top"][0][0] in demo_data.CLASSES
    folder = json.loads(vs2("classify", work / "exported" / "model.onnx", val / demo_data.CLASSES[0],
                            "--json").stdout)  # a model file and a folder of images
    assert len(folder["predictions"]) == 6


def test_eval_reports_both_accuracies_per_class(flow):
    work, val = flow
    result = vs2("eval", work / "exported" / "model.onnx", "--images", val, "--run", work)
    assert "zero-shot" in result.stdout and "ALL" in result.stdout
    report = json.loads((work / "reports" / "exported.eval.json").read_text())
    assert report["n_images"] == 6 * len(demo_data.CLASSES)
    assert 0 <= report["zero_shot_top1"] <= 1 and len(report["per_class"]) == len(demo_data.CLASSES)
    assert "McNemar p =" in result.output and "CI [" in result.output
    assert report["wins"] + report["losses"] <= report["n_images"] and 0 <= report["p_value"] <= 1
    low, high = report["delta_ci"]
    assert low <= report["delta"] <= high


def test_the_export_folder_holds_only_what_ships(flow):
    """After export, verify, eval (and classify) nothing but models, manifests, runtime inputs and
    the model card is there: sources, records and reports are in the run folder."""
    work, _ = flow
    names = sorted(p.name for p in (work / "exported").iterdir())
    assert names == sorted([contract.MODEL_FILE, contract.MANIFEST_FILE, contract.TEXT_MODEL_FILE,
                            contract.CLASS_EMBEDDINGS_FILE, "tokenizer", contract.REFERENCE_DIR,
                            contract.CARD_FILE, contract.CARD_RECORDS_FILE])
    assert all(contract.shipped(name) for name in names)
    assert (work / "exports" / "exported.json").is_file()


def test_existing_outputs_are_not_overwritten_without_force(flow):
    work, _ = flow
    result = vs2("calibrate", "--acts", work / "acts", "--sae", work / "sae", "--out",
                 work / "steering.json", code=2)
    assert "--force" in result.stderr


def test_quickstart_runs_end_to_end(tmp_path):
    result = vs2("quickstart", "--workdir", tmp_path, "--n-unlabeled", 300, "--epochs", 5,
                 "--n-val-per-class", 6)
    assert "parity PASS" in result.stdout and "ALL" in result.stdout
    assert "McNemar p =" in result.stdout  # the change comes with its evidence
    assert (tmp_path / "exported" / "vs2-demo" / "model.onnx").is_file()
    written = json.loads((tmp_path / "quickstart_report.json").read_text())  # typed reports, as JSON
    assert written["parity"]["verdict"] == "PASS" and 0 <= written["eval"]["p_value"] <= 1


def test_gallery_writes_a_page_a_browser_renders(flow, tmp_path):
    work, val = flow
    out = tmp_path / "gallery"
    result = vs2("gallery", work / "exported", "--run", work, "--images", val, "--out", out,
                 "--latents", 4,
                 "--per-latent", 3, "--images-shown", 5)
    assert "gallery of 4 latents" in result.output
    page = (out / "index.html").read_text()
    data = json.loads((out / "gallery.json").read_text())
    assert len(data["latents"]) == 4 and len(data["shown"]) == 5
    for row in data["latents"]:
        assert row["top"] and len(row["prompts"]) == 3  # nearest class prompts, best first
        assert row["prompts"][0][1] >= row["prompts"][-1][1]
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs and all((out / s).is_file() for s in srcs)  # images are files beside the page
    assert "<script" not in page
    vs2("gallery", work / "exported", "--run", work, "--images", val, "--out", out, code=2)  # no --force
    shot = screenshot(out / "index.html", tmp_path)
    if shot is not None:  # Chromium renders it: not blank, images decoded
        from PIL import Image
        pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
        assert pixels.std() > 10


def screenshot(page, tmp_path):
    """A headless Chromium screenshot of `page`, or None where no Chromium is installed."""
    chromium = os.environ.get("VS2_CHROMIUM", "/usr/bin/chromium")
    if not os.path.exists(chromium):
        return None
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars",
                    "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return shot


def test_every_export_carries_a_model_card_that_verify_and_eval_extend(flow):
    work, val = flow
    folder = work / "exported"
    manifest = json.loads((folder / "manifest.json").read_text())
    facts = manifest["card"]
    assert facts["model"]["licence"] == "MIT" and len(facts["model"]["weights_sha256"]) == 64
    assert facts["model"]["weights_sha256"] == manifest["model"]["weights_sha256"]
    assert facts["sae"]["training_data"]["count"] == 400
    assert facts["gate"]["criterion"] == "rel_err" and 0.98 <= facts["gate"]["pass_rate"] <= 1
    vs2("verify", folder, "--run", work, "--images", val)
    vs2("eval", folder, "--images", val)
    card = (folder / "MODEL_CARD.md").read_text()
    assert "| fp32 | cpu | **PASS** |" in card and "## Accuracy" in card
    assert facts["model"]["weights_sha256"] in card and "rel_err" in card


def test_the_papers_fvu_gate_and_the_raw_error_gate_export_and_verify(flow, tmp_path):
    work, val = flow
    for gate in ("fvu", "err"):
        vs2("calibrate", "--acts", work / "acts", "--sae", work / "sae", "--out",
            tmp_path / f"{gate}.json", "--gate", gate)
        vs2("export", "--sae", work / "sae", "--steering", tmp_path / f"{gate}.json", "--classes",
            work / "classes.txt", "--out", tmp_path / gate)
        assert json.loads(vs2("verify", tmp_path / gate, "--run", tmp_path, "--images", val,
                              "--json").output)[
            "verdict"] == "PASS"
        assert json.loads((tmp_path / gate / "manifest.json").read_text())["steering"]["gate"] == gate


def test_the_session_monitors_its_gate_from_the_graph_outputs(flow):
    from vs2_export.runtime import Vs2Session
    work, val = flow
    session = Vs2Session(work / "exported")
    result = session.run_paths(sorted(val.rglob("*.png")))
    session.run_paths(sorted(val.rglob("*.png"))[:5], lambda_=0.0)  # overridden: not counted
    summary = session.gate_monitor.summary()
    assert summary.count == len(result.paths)
    assert summary.pass_rate == pytest.approx(float(result.outputs["steered"].mean()))
    assert summary.calibrated["pass_rate"] >= 0.98
