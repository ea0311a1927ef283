"""What the commands write, and where: never over their own inputs, never half-built, the model
card a best-effort by-product (red-team findings 1, 5, 8-10, 13-15, 18).

Fast on purpose: the runtime-side commands use the tiny fake graph of test_runtime; only the
gallery test needs a real export, and takes the session's rgb_export.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from PIL import Image
from test_cli_errors import expect_error, invoke
from test_runtime import CLASSES, build_fake_model, manifest_dict, save_model

from vs2_export import card, gallery
from vs2_export.artifacts import sha256_file
from vs2_export.runtime import contract
from vs2_export.runtime.session import Vs2Session


@pytest.fixture(scope="module")
def fake(module_tmp):
    """A fake export with its manifest.json copy (so the card is kept) and a labeled folder
    with one file that is not an image."""
    root = module_tmp.mktemp("outputs")
    folder = save_model(root / "exp", build_fake_model())
    (folder / contract.MANIFEST_FILE).write_text(Vs2Session(folder).manifest.to_json())
    for i, name in enumerate(CLASSES[:2]):
        (root / "lab" / name).mkdir(parents=True)
        Image.new("RGB", (20, 20), (40 * i, 90, 160)).save(root / "lab" / name / f"{i}.png")
    (root / "lab" / CLASSES[2]).mkdir()
    (root / "lab" / CLASSES[2] / "bad.png").write_text("not an image")
    dist = root / "dist"
    dist.mkdir()
    for name in ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"):
        (dist / name).write_text("")
    return root


def _eval(fake, *extra):
    return invoke("eval", fake / "exp", "--images", fake / "lab", "--bootstrap", 10, *extra)


@pytest.mark.parametrize("target", ["exp/model.onnx", "exp/manifest.json", "exp",
                                    "exp/class_embeddings.f32", "lab/cat/0.png", "lab/new.json"])
def test_eval_refuses_a_report_over_its_inputs(fake, target):
    before = {p: sha256_file(p) for p in fake.rglob("*") if p.is_file()}
    line = expect_error(2, "eval", fake / "exp", "--images", fake / "lab",
                        "--report", fake / target, words=("--report", "input"))
    assert "lies inside" in line
    assert {p: sha256_file(p) for p in fake.rglob("*") if p.is_file()} == before


def test_report_needs_a_file_name(fake):
    expect_error(2, "eval", fake / "exp", "--images", fake / "lab", "--report", "",
                 words=("--report", "file name"))


def test_eval_text_lists_the_skipped_files(fake, tmp_path):
    code, out, _ = _eval(fake, "--report", tmp_path / "r.json")
    assert code == 0
    assert f"skipped {fake / 'lab' / CLASSES[2] / 'bad.png'}:" in out
    assert json.loads((tmp_path / "r.json").read_text())["skipped"]


def test_eval_names_the_option_of_a_bad_seed(fake):
    expect_error(2, "eval", fake / "exp", "--images", fake / "lab", "--seed", -1,
                 words=("--seed",))


def test_eval_help_offers_only_what_eval_runs():
    code, out, _ = invoke("eval", "--help")
    precision = " ".join(out.split()).split("--precision", 1)[1].split("--provider")[0]
    assert code == 0 and "bf16 (" not in precision


def test_bench_bounds_its_batch(fake, tmp_path):
    expect_error(2, "bench", fake / "exp", "--run", tmp_path, "--batch", 100_000_000,
                 words=("batch", "4096"))


def test_classify_computes_in_the_precision_asked_or_refuses(fake):
    expect_error(2, "classify", fake / "exp", fake / "lab" / "cat", "--precision", "bf16",
                 words=("bf16",))


def test_classify_template_needs_classes(fake):
    expect_error(2, "classify", fake / "exp", fake / "lab" / "cat", "--template", "a {}",
                 words=("--classes",))


def test_verify_pretrained_without_model_is_refused(fake):
    expect_error(2, "verify", fake / "exp", "--pretrained", "/etc/passwd", words=("--model",))


# ---- the model card: rendered from the validated manifest, best effort


@pytest.mark.parametrize("copy", ["{}", "[1]", '{"model": "m"}', "[" * 100000 + "]" * 100000,
                                  None])
def test_card_comes_from_the_graph_not_the_manifest_copy(fake, tmp_path, copy):
    folder = tmp_path / "exp"
    folder.mkdir()
    for p in (fake / "exp").iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    if copy is not None:
        (folder / contract.MANIFEST_FILE).write_text(copy)
    else:  # the copy valid, its free-form card of the wrong types
        data = manifest_dict() | {"card": {"model": [1], "sae": "s", "gate": [1]}}
        (folder / contract.MANIFEST_FILE).write_text(json.dumps(data))
    code, _, err = invoke("eval", folder, "--images", fake / "lab", "--bootstrap", 10)
    assert code == 0, err[-800:]
    text = (folder / contract.CARD_FILE).read_text()
    assert "## Accuracy" in text and Vs2Session(folder).manifest.model.id in text


def test_card_of_wrong_typed_sections_reads_not_recorded():
    data = manifest_dict() | {"card": {"model": [1], "sae": {"fvu": {"mean": "x"}},
                                       "gate": {"pass_rate": "y"}}}
    text = card.render(data, {})
    assert "licence: **unknown**" in text and "mean ?" in text


@pytest.mark.parametrize("records", ['{"eval": [1, 2], "verify": "x", "bench": 5}',
                                     '{"eval": {"k": 5}, "verify": {"cpu": "x"}}', "garbage",
                                     '{"bench": {"cpu": {"rows": 3}}}'])
def test_bad_card_records_are_dropped_with_a_warning(tmp_path, caplog, records):
    (tmp_path / contract.CARD_RECORDS_FILE).write_text(records)
    with caplog.at_level(logging.WARNING, "vs2_export.card"):
        assert card.read_records(tmp_path) == {}
    assert len(caplog.records) == 1


def test_card_update_on_a_read_only_folder_is_a_warning(fake, tmp_path, monkeypatch, caplog):
    def read_only(path, data):
        raise OSError(30, "Read-only file system", str(path))
    monkeypatch.setattr(card, "write_json", read_only)
    with caplog.at_level(logging.WARNING, "vs2_export.card"):
        code, out, err = _eval(fake, "--report", tmp_path / "r.json")
    assert code == 0 and (tmp_path / "r.json").is_file(), err[-800:]
    assert [r.getMessage() for r in caplog.records if "not updated" in r.getMessage()]


# ---- vs2 web


def _web(fake, out, *extra):
    return ("web", fake / "exp", "--out", out, "--ort-dist", fake / "dist", *extra)


def test_web_refuses_a_site_inside_the_export(fake):
    expect_error(2, *_web(fake, fake / "exp" / "site"), words=("--out", "input"))
    assert not (fake / "exp" / "site").exists()


def test_web_refreshes_an_existing_site_only_with_force(fake, tmp_path):
    out = tmp_path / "site"
    assert invoke(*_web(fake, out))[0] == 0
    served = json.loads((out / "model" / contract.MANIFEST_FILE).read_text())
    assert served == json.loads(Vs2Session(fake / "exp").manifest.to_json())  # from the graph
    expect_error(2, *_web(fake, out), words=("--force",))
    assert invoke(*_web(fake, out, "--force"))[0] == 0


def test_web_checks_the_export_before_building(fake, tmp_path):
    bare = build_fake_model()
    del bare.metadata_props[:]
    save_model(tmp_path / "nometa", bare)
    expect_error(2, "web", tmp_path / "nometa", "--out", tmp_path / "s1", "--ort-dist",
                 fake / "dist", words=("metadata",))
    expect_error(2, *_web(fake, tmp_path / "s2", "--precision", "bf16"), words=("bf16",))
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


def test_web_names_a_sidecar_for_what_it_is(fake, tmp_path):
    folder = save_model(tmp_path / "exp", build_fake_model())
    (folder / "model.onnx.data").write_bytes(b"\0" * 2**20)
    line = expect_error(2, "web", folder, "--out", tmp_path / "s", "--ort-dist", fake / "dist",
                        words=("external data", "1.0 MiB"))
    assert "2 GB" not in line


# ---- interrupts, the gallery


def test_ctrl_c_while_the_cli_imports_is_one_line_and_130():
    code = ("import os, signal, sys; sys.argv[0] = 'vs2'; import vs2_export.cli; "
            "os.kill(os.getpid(), signal.SIGINT); signal.pause()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 130 and done.stderr.decode() == "vs2: interrupted\n"


def run_doctor(diagnose: str = "pass", before: str = "", after: str = "") -> subprocess.CompletedProcess:
    """`vs2 doctor` through cli.main() in a fresh interpreter, with `diagnose` as the body of
    doctor.diagnose and `before` / `after` run around the import of the CLI: controlled points to
    send a SIGINT from, no timing involved (signal.raise_signal runs the Python handler before it
    returns)."""
    code = (f"import atexit, os, signal, sys\n{before}\nfrom vs2_export import cli, doctor\n{after}\n"
            f"def diagnose(**kw):\n    {diagnose}\n    return {{'healthy': True}}\n"
            "doctor.diagnose, doctor.format_report = diagnose, lambda report: 'doctor ran'\n"
            "sys.argv[1:] = ['doctor', '--no-demo']\ncli.main()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)


def test_ctrl_c_that_a_library_swallows_is_still_130():
    """doctor's `except ImportError` around an openvino import cut short by Ctrl-C said 'not
    installed', then 'healthy', exit 0: an interrupted command never reports success."""
    done = run_doctor("try:\n        signal.raise_signal(signal.SIGINT)\n"
                      "    except KeyboardInterrupt:\n        pass")
    assert (done.returncode, done.stderr.decode()) == (130, "vs2: interrupted\n")


@pytest.mark.parametrize("after", [
    "cli._name_placeholders = lambda group: signal.raise_signal(signal.SIGINT)",  # typer parsing
    "atexit.register(signal.raise_signal, signal.SIGINT)",  # interpreter shutdown, after the command
], ids=["parsing", "shutdown"])
def test_ctrl_c_outside_a_command_body_is_one_line_and_130(after):
    """With Python's handler back after the imports these gave a traceback (exit -2) and, in
    shutdown, 'Exception ignored' and exit 0."""
    done = run_doctor(after=after)
    assert (done.returncode, done.stderr.decode()) == (130, "vs2: interrupted\n")


def test_ctrl_c_ignored_by_the_parent_stays_ignored_throughout():
    """A shell starts background jobs with SIGINT ignored; Python keeps that, and so does vs2, at
    import and in the command alike (taking it over after the imports made `kill -INT` exit 0 in
    the first 0.05 s and 130 after)."""
    done = run_doctor("assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN",
                      before="signal.signal(signal.SIGINT, signal.SIG_IGN); sys.argv[0] = 'vs2'")
    assert (done.returncode, done.stdout.decode()) == (0, "doctor ran\n"), done.stderr.decode()[-1500:]


def test_gallery_shows_names_that_are_not_utf8_and_leaves_nothing_on_failure(
        rgb_export, demo_work, tmp_path, monkeypatch):
    images = tmp_path / "imgs"
    images.mkdir()
    source = sorted(p for p in (demo_work / "unlabeled").rglob("*") if p.is_file())[0]
    odd = os.fsdecode(b"\xffodd") + source.suffix
    for name in (odd, "plain" + source.suffix):
        (images / name).write_bytes(source.read_bytes())
    args = ("gallery", rgb_export, "--run", demo_work, "--images", images, "--latents", 2,
            "--per-latent", 1, "--images-shown", 2)
    code, _, err = invoke(*args, "--out", tmp_path / "g")
    assert code == 0, err[-800:]
    assert "\\xffodd" in (tmp_path / "g" / contract.GALLERY_PAGE).read_text()
    monkeypatch.setattr(gallery, "render_page", lambda data: 1 / 0)
    assert invoke(*args, "--out", tmp_path / "g2")[0] == 3
    assert not (tmp_path / "g2").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_gallery_refuses_a_page_inside_its_inputs(fake):
    expect_error(2, "gallery", fake / "exp", "--images", fake / "lab", "--out",
                 fake / "lab" / "g", words=("--out", "input"))
    assert not (fake / "lab" / "g").exists()


@pytest.mark.parametrize("inside", ["sae/exp", "unlabeled/exp", "classes.txt"])
def test_export_refuses_an_out_over_its_sources(demo_work, inside):
    expect_error(2, "export", "--sae", demo_work / "sae", "--steering",
                 demo_work / "steering.json", "--classes", demo_work / "classes.txt",
                 "--calibration", demo_work / "unlabeled", "--out", demo_work / inside,
                 words=("--out", "input"))
    assert not (demo_work / inside).is_dir()


def test_torch_side_outputs_stay_out_of_their_inputs(demo_work):
    expect_error(2, "extract", "--images", demo_work / "unlabeled", "--out",
                 demo_work / "unlabeled" / "acts", "--model", "vs2-demo", words=("--out",))
    expect_error(2, "train", "--acts", demo_work / "acts", "--out", demo_work / "acts",
                 words=("--out",))
    expect_error(2, "calibrate", "--acts", demo_work / "acts", "--sae", demo_work / "sae",
                 "--out", demo_work / "sae" / "cfg.json", words=("--out",))
    assert not (demo_work / "unlabeled" / "acts").exists()
