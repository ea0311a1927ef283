"""Mismatches and bad input through the real CLI (typer's CliRunner, in-process for speed): exit
code 2 and exactly ONE clear line, never a traceback (issue 5, items 3 and 5).

Pieces that do not need the demo CLIP use a synthetic activation store (d=32); the runtime-side
commands (classify, eval) use the tiny fake graph of test_runtime.
"""

from __future__ import annotations

import json
import pickle

import hostile
import numpy as np
import pytest
import torch
from conftest import synthetic_activations
from hostile import error_lines, model_with_external_data
from PIL import Image
from test_runtime import build_fake_model, save_model
from typer.testing import CliRunner

from vs2_export import cli
from vs2_export.calibrate import calibrate
from vs2_export.config import CalibrateConfig, TrainConfig
from vs2_export.errors import Vs2Error
from vs2_export.sae import WEIGHTS_FILE
from vs2_export.store import store_array
from vs2_export.train import train_sae

DEMO_WIDTH = 128  # the demo CLIP's CLS width (vs2_export/demo/train_clip.py MODEL_CFG)


def invoke(*args) -> tuple[int, str, str]:
    """Run `vs2 ARGS` in-process -> (exit code, stdout, stderr); an escaped exception fails."""
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    return result.exit_code, result.stdout, result.stderr


def expect_error(code: int, *args, words: tuple[str, ...] = ()) -> str:
    """The command exits `code` with one verdict line on stderr holding every word."""
    exit_code, out, err = invoke(*args)
    assert exit_code == code, (exit_code, out[-500:], err[-1500:])
    lines = error_lines(err)
    assert len(lines) == 1, err[-1500:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _sae(store, out, seed=0, k=8):
    train_sae(TrainConfig(store, out, expansion=2, k=k, batch_size=256, epochs=1, seed=seed))
    return out


@pytest.fixture(scope="module")
def work(module_tmp):
    """Two stores (d=32 'small-model', d=128 'other-model'), SAEs, steering files, a fake export."""
    root = module_tmp.mktemp("cli_errors")
    small = store_array(root / "acts32", synthetic_activations(512, 32), "small-model", "none")
    other = store_array(root / "acts128", synthetic_activations(512, DEMO_WIDTH, seed=1),
                        "other-model", "none")
    _sae(small, root / "sae32")
    _sae(other, root / "sae128")
    _sae(other, root / "sae128b", seed=1)
    calibrate(CalibrateConfig(other, root / "sae128", root / "steering128.json"))
    save_model(root / "fake", build_fake_model())
    return root


# ---- torch side: files that do not fit together


def test_calibrate_sae_width_differs_from_activations(work):
    expect_error(2, "calibrate", "--acts", work / "acts128", "--sae", work / "sae32",
                 "--out", work / "s.json", words=("d=32", "d=128"))


def test_export_sae_width_differs_from_model(work):
    calibrate(CalibrateConfig(work / "acts32", work / "sae32", work / "steering32.json"))
    expect_error(2, "export", "--model", "vs2-demo", "--sae", work / "sae32", "--steering", work / "steering32.json",
                 "--out", work / "x1", words=("d=32", "d=128"))


def test_export_activations_from_another_model(work):
    expect_error(2, "export", "--model", "vs2-demo", "--sae", work / "sae128", "--steering", work / "steering128.json",
                 "--out", work / "x2", words=("other-model", "vs2-demo"))


def test_export_steering_from_another_sae(work):
    expect_error(2, "export", "--model", "vs2-demo", "--sae", work / "sae128b", "--steering", work / "steering128.json",
                 "--out", work / "x3", words=("calibrated for SAE",))


@pytest.mark.parametrize("content, words", [
    ("cat\ndog\ncat\n", ("line 3", "repeats 'cat'")),
    ("cat\n\ndog\n", ("line 2 is empty",)),
    ("\n\n", ("found none",)),
    (b"caf\xe9\n", ("cannot read",)),
])
def test_export_bad_class_file(work, tmp_path, content, words):
    classes = tmp_path / "classes.txt"
    classes.write_bytes(content if isinstance(content, bytes) else content.encode())
    expect_error(2, "export", "--model", "vs2-demo", "--sae", work / "sae128", "--steering", work / "steering128.json",
                 "--out", tmp_path / "x", "--classes", classes, words=words)


# ---- corrupt or foreign artifacts


def test_pickled_sae_weights_are_refused(work, tmp_path):
    bad = tmp_path / "sae"
    bad.mkdir()
    (bad / "cfg.json").write_text((work / "sae128" / "cfg.json").read_text())
    (bad / WEIGHTS_FILE).write_bytes(pickle.dumps({"W_enc": torch.zeros(3)}))
    expect_error(2, "calibrate", "--acts", work / "acts128", "--sae", bad, "--out",
                 tmp_path / "s.json", words=("cannot read", WEIGHTS_FILE))


class _Payload:
    """Unpickling this opens (creates) a file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_clip_checkpoint_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(marker)}, evil)
    (tmp_path / "img").mkdir()
    Image.new("RGB", (9, 9), "red").save(tmp_path / "img" / "a.png")
    expect_error(2, "extract", "--images", tmp_path / "img", "--out", tmp_path / "a", "--model",
                 "ViT-B-32", "--pretrained", evil, words=("refused", "weights_only"))
    assert not marker.exists()


def test_sae_weights_not_matching_their_cfg_are_refused(work, tmp_path):
    """New weights under an old cfg.json (a kill between the two renames of train --force)."""
    mixed = tmp_path / "sae"
    mixed.mkdir()
    (mixed / "cfg.json").write_text((work / "sae128" / "cfg.json").read_text())
    (mixed / WEIGHTS_FILE).write_bytes((work / "sae128b" / WEIGHTS_FILE).read_bytes())
    expect_error(2, "calibrate", "--acts", work / "acts128", "--sae", mixed, "--out",
                 tmp_path / "s.json", words=("SHA-256", "interrupted"))


@pytest.mark.parametrize("damage, words", [
    ("no_meta", ("activation store", "found none")),
    ("garbage_meta", ("not valid JSON",)),
    ("truncated_shard", ("cannot read",)),
    ("nan", ("NaN",)),
])
def test_calibrate_on_a_damaged_store(work, tmp_path, damage, words):
    h = synthetic_activations(256, DEMO_WIDTH, seed=1)
    if damage == "nan":
        h[7, 3] = np.nan
    acts = store_array(tmp_path / "acts", h, "other-model", "none")
    shard = next(acts.glob("shard-*.npy"))
    if damage == "no_meta":
        (acts / "meta.json").unlink()
    elif damage == "garbage_meta":
        (acts / "meta.json").write_text('{"format": "vs2-activations", "shards": [')
    elif damage == "truncated_shard":
        shard.write_bytes(shard.read_bytes()[:1000])
    expect_error(2, "calibrate", "--acts", acts, "--sae", work / "sae128", "--out",
                 tmp_path / "s.json", words=words)
    assert not (tmp_path / "s.json").exists()


def test_existing_outputs_need_force(work, tmp_path):
    out = tmp_path / "steering.json"
    out.write_text("{}")
    expect_error(2, "calibrate", "--acts", work / "acts128", "--sae", work / "sae128", "--out",
                 out, words=("exists already", "--force"))
    assert out.read_text() == "{}"
    expect_error(2, "train", "--acts", work / "acts128", "--out", work / "sae128", "--epochs",
                 "1", words=("--force",))
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "model.onnx").write_bytes(b"somebody's model")
    expect_error(2, "export", "--model", "vs2-demo", "--sae", work / "sae128", "--steering", work / "steering128.json",
                 "--out", tmp_path / "exported", words=("exists already", "--force"))
    assert (tmp_path / "exported" / "model.onnx").read_bytes() == b"somebody's model"


@pytest.mark.parametrize("value", ["sometimes", "-1", "nan"])
def test_export_bad_int8_recheck(work, tmp_path, value):
    expect_error(2, "export", "--model", "vs2-demo", "--sae", work / "sae128", "--steering",
                 work / "steering128.json", "--out", tmp_path / "exported", "--precision", "int8",
                 "--int8-recheck", value, words=("int8_recheck", value))
    assert not (tmp_path / "exported").exists()


# ---- devices and providers that are not there


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", ["extract", "train"])
def test_torch_device_cuda_without_a_gpu(work, tmp_path, command):
    (tmp_path / "img").mkdir()
    args = (["extract", "--images", tmp_path / "img", "--out", tmp_path / "a", "--model", "vs2-demo"]
            if command == "extract" else ["train", "--acts", work / "acts128", "--out",
                                          tmp_path / "s"])
    expect_error(2, *args, "--device", "cuda", words=("expected a CUDA GPU", "--device cpu"))
    expect_error(2, *args, "--device", "tpu:7", words=("expected cpu, cuda",))


def test_provider_cuda_without_cuda(work, tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (9, 9), "red").save(image)
    expect_error(2, "classify", work / "fake", image, "--provider", "cuda",
                 words=("asked for cuda",))
    expect_error(2, "classify", work / "fake", image, "--provider", "tpu",
                 words=("provider: expected one of",))


def test_model_from_elsewhere_with_external_data_outside_its_folder(work, tmp_path):
    model = model_with_external_data(tmp_path / "m", "../secret.bin")
    expect_error(2, "classify", model.parent, tmp_path / "x.png",
                 words=("external data inside the model's folder", "../secret.bin"))


# ---- the mapping itself


def test_classify_with_no_readable_image_is_one_error_line(work, tmp_path):
    (tmp_path / "a.jpg").write_text("not an image")
    line = expect_error(2, "classify", work / "fake", tmp_path / "a.jpg", tmp_path / "gone.png",
                        words=("none of the 2 images",))
    assert "not a recognised image format" in line


def test_an_internal_error_is_one_line_exit_3(work, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom\nsecond line of a library message")
    monkeypatch.setattr("vs2_export.calibrate.calibrate", broken)
    line = expect_error(3, "calibrate", "--acts", work / "acts128", "--sae", work / "sae128",
                        "--out", work / "never.json", words=("internal error", "RuntimeError"))
    assert "boom second line" in line  # a multi-line message is folded into the one line


def test_json_output_is_machine_readable(work, tmp_path):
    code, out, _ = invoke("calibrate", "--acts", work / "acts128", "--sae", work / "sae128",
                          "--out", tmp_path / "s.json", "--json")
    assert code == 0 and json.loads(out)["format"] == "vs2-steering"


# ---- issue 10: hostile artifacts and numbers, exit 2 and one line each (never exit 3)


@pytest.mark.parametrize("name", sorted(hostile.hostile_meta({"shards": [{}], "count": 0})))
def test_hostile_meta_json_is_refused(work, tmp_path, name):
    import shutil
    acts = tmp_path / "acts"
    shutil.copytree(work / "acts128", acts)
    good = json.loads((acts / "meta.json").read_text())
    (acts / "meta.json").write_text(json.dumps(hostile.hostile_meta(good)[name]))
    expect_error(2, "calibrate", "--acts", acts, "--sae", work / "sae128", "--out",
                 tmp_path / "s.json", words=("activation store",))


@pytest.mark.parametrize("name", sorted(hostile.hostile_sae_cfg({"k": 1})))
def test_hostile_sae_cfg_is_refused(work, tmp_path, name):
    import shutil
    sae = tmp_path / "sae"
    shutil.copytree(work / "sae128", sae)
    good = json.loads((sae / "cfg.json").read_text())
    (sae / "cfg.json").write_text(json.dumps(hostile.hostile_sae_cfg(good)[name]))
    expect_error(2, "calibrate", "--acts", work / "acts128", "--sae", sae, "--out",
                 tmp_path / "s.json", words=("SAE",))


@pytest.mark.parametrize("name", sorted(hostile.hostile_steering({})))
def test_hostile_steering_json_is_refused(work, tmp_path, name):
    good = json.loads((work / "steering128.json").read_text())
    bad = tmp_path / "steering.json"
    bad.write_text(json.dumps(hostile.hostile_steering(good)[name]))
    expect_error(2, "export", "--model", "vs2-demo", "--sae", work / "sae128", "--steering", bad,
                 "--out", tmp_path / "x", words=("steering",))


@pytest.mark.parametrize("command, option, value", hostile.CLI_NUMBERS)
def test_hostile_numbers_are_refused(work, tmp_path, command, option, value):
    common = {"train": ["--acts", work / "acts128", "--out", tmp_path / "sae"],
              "calibrate": ["--acts", work / "acts128", "--sae", work / "sae128", "--out",
                            tmp_path / "s.json"]}[command]
    expect_error(2, command, *common, option, value, words=(option.lstrip("-").split("-")[0],))


def test_usage_errors_are_one_line(work):
    for args in (["train", "--acts"], ["train", "--nope", "1"], ["nosuch"], ["extract", "--images", "x",
                                                                             "--out", "y"]):
        line = expect_error(2, *args)
        assert "--help" in line


def test_non_finite_activations_stop_training_and_keep_the_old_sae(work, tmp_path):
    import shutil
    sae = tmp_path / "sae"
    shutil.copytree(work / "sae128", sae)
    before = {p.name: p.read_bytes() for p in sae.iterdir()}
    h = synthetic_activations(256, DEMO_WIDTH)
    h[3, 5] = np.inf
    acts = store_array(tmp_path / "acts", h, "other-model", "none")
    expect_error(2, "train", "--acts", acts, "--out", sae, "--force", "--epochs", "1",
                 words=("NaN or Inf",))
    assert {p.name: p.read_bytes() for p in sae.iterdir()} == before


def test_a_loss_that_diverges_stops_training(work, tmp_path, monkeypatch):
    from vs2_export.train import loop
    real = loop.train_step

    def diverging(*args, **kwargs):
        metrics = real(*args, **kwargs)
        return {**metrics, "fvu": float("nan")}
    monkeypatch.setattr(loop, "train_step", diverging)
    expect_error(2, "train", "--acts", work / "acts128", "--out", tmp_path / "sae", "--epochs", "1",
                 words=("non-finite", "step 0"))
    assert not (tmp_path / "sae" / "cfg.json").exists()


def test_resume_refuses_another_store_at_the_same_path(work, tmp_path):
    from vs2_export.distributed import Comm
    from vs2_export.store import ActivationStore
    from vs2_export.train.checkpoint import load_checkpoint, save_checkpoint
    from vs2_export.train.recipe import FireStats, init_sae
    cfg = TrainConfig(work / "acts128", tmp_path / "sae", expansion=2, k=8, resume=True)
    sae = init_sae(cfg, ActivationStore(cfg.acts))
    save_checkpoint(cfg.out, 3, sae, torch.optim.Adam(sae.parameters()), FireStats.zeros(sae.cfg.n),
                    cfg, store_id="0" * 64)
    with pytest.raises(Vs2Error, match="other content at the same path"):
        load_checkpoint(cfg.out, cfg, Comm(), ActivationStore(cfg.acts).meta.store_id)
