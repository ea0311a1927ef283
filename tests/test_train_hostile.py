"""Hostile input to `vs2 train --resume` and `vs2 quickstart`: a damaged, foreign or malicious
checkpoint, a run folder spelled or placed differently, an overflowing store, unbounded counts.
Each is exit 2 with one line naming the culprit, never an internal error (exit 3)."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import synthetic_activations
from hostile import error_lines
from typer.testing import CliRunner

from vs2_export import cli
from vs2_export.config import QuickstartConfig, TrainConfig
from vs2_export.errors import Vs2Error
from vs2_export.store import ActivationStore, store_array
from vs2_export.train import train_sae
from vs2_export.train.checkpoint import save_checkpoint
from vs2_export.train.recipe import FireStats, init_sae

pytestmark = pytest.mark.usefixtures("one_thread")
STEP = 3  # of 8: 2048 rows, batch 256, one epoch


def config(store, out, **kw) -> TrainConfig:
    return TrainConfig(store, out, expansion=2, k=4, batch_size=256, epochs=1, resume=True, **kw)


def checkpoint(store, out) -> str:
    """A real checkpoint at STEP (Adam moments included, as a run leaves them); its path."""
    cfg = config(store, out)
    sae = init_sae(cfg, ActivationStore(store))
    opt = torch.optim.Adam(sae.parameters())
    sae.W_enc.sum().backward()
    opt.step()
    save_checkpoint(out, STEP, sae, opt, FireStats.zeros(sae.cfg.n), cfg,
                    ActivationStore(store).meta.store_id)
    return str(out / "checkpoint" / "state.pt")


def invoke(*args) -> tuple[int, str]:
    """`vs2 ARGS` in-process -> (exit code, stderr); an escaped exception fails."""
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    return result.exit_code, result.stderr


class Payload:
    """Unpickling this runs code: it must never be unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_garbage_checkpoint_is_exit_2_naming_the_file(store, tmp_path):
    path = checkpoint(store, tmp_path / "sae")
    with open(path, "wb") as fh:
        fh.write(np.random.default_rng(0).bytes(5000))
    code, err = invoke("train", "--acts", store, "--out", tmp_path / "sae", "--expansion", 2,
                       "--k", 4, "--batch-size", 256, "--epochs", 1, "--resume")
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err[-1500:]
    assert "state.pt is not a readable checkpoint" in lines[0] and "trusted" not in lines[0]


def test_a_malicious_pickle_is_refused_and_never_run(store, tmp_path):
    path = checkpoint(store, tmp_path / "sae")
    marker = tmp_path / "ran"
    torch.save({"step": STEP, "config": {}, "sae": Payload(str(marker)), "optimizer": {}}, path)
    with pytest.raises(Vs2Error, match="state.pt is not a readable checkpoint .*posix.mkdir"):
        train_sae(config(store, tmp_path / "sae"))
    assert not marker.exists()


def _wrong_shape(state):
    state["sae"]["W_enc"] = torch.zeros(7, 7)


def _moment_shape(state):
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)


def _nan_moment(state):
    state["optimizer"]["state"][0]["exp_avg_sq"].fill_(float("nan"))


@pytest.mark.parametrize("tamper, words", [
    (_wrong_shape, "size mismatch for W_enc"),
    (lambda s: s.pop("since"), "no entry 'since'"),
    (lambda s: s.update(since=5), "since: expected (64,) counts"),
    (lambda s: s.update(window=torch.zeros(1, dtype=torch.long)), "window: expected (64,)"),
    (lambda s: s.update(step="3"), "step: expected an integer"),
    (lambda s: s.update(step=10**9), "step: expected an integer in [0, 8)"),
    (lambda s: s.update(window_samples=[1]), "window_samples"),
    (lambda s: s.update(optimizer=[]), "optimizer.state: expected Adam moments"),
    (_moment_shape, "optimizer.state.0: expected Adam's"),
    (lambda s: s["sae"].update(b_enc="x"), "sae.b_enc: expected a dense real tensor"),
    (lambda s: s["sae"]["W_enc"].fill_(float("nan")), "sae.W_enc holds NaN or Inf"),
    (_nan_moment, "optimizer.state.0.exp_avg_sq holds NaN or Inf"),
    (lambda s: s.update(config=[1]), "not a vs2 training checkpoint"),
    (lambda s: s["config"].update(k=torch.ones(2)), "not a vs2 training checkpoint"),
    (lambda s: s.update(store_id=7), "not a vs2 training checkpoint"),
])
def test_a_checkpoint_that_does_not_fit_is_refused_naming_it(store, tmp_path, tamper, words):
    path = checkpoint(store, tmp_path / "sae")
    state = torch.load(path, weights_only=True)
    tamper(state)
    torch.save(state, path)
    with pytest.raises(Vs2Error) as caught:
        train_sae(config(store, tmp_path / "sae"))
    assert "state.pt" in str(caught.value) and words in str(caught.value), str(caught.value)
    assert "--lr" not in str(caught.value)


@pytest.mark.parametrize("line", ["garbage", '{"x": 1}', "[1]", '{"step": "a"}',
                                  '{"step": 1, "fvu": "x"}', "[" * 100_000])
def test_a_damaged_metrics_log_is_refused_by_line(store, tmp_path, line):
    checkpoint(store, tmp_path / "sae")
    (tmp_path / "sae" / "metrics.jsonl").write_text('{"step": 0, "fvu": 1.0}\n' + line + "\n")
    with pytest.raises(Vs2Error, match="metrics.jsonl line 2: expected a metrics record"):
        train_sae(config(store, tmp_path / "sae"))


def test_resume_takes_the_run_folder_however_spelled_or_moved(store, tmp_path, monkeypatch):
    checkpoint(store, tmp_path / "sae")
    monkeypatch.chdir(tmp_path)
    shutil.move(tmp_path / "sae", tmp_path / "moved")
    shutil.copytree(store, tmp_path / "acts-copy")
    result = train_sae(config(os.path.relpath(tmp_path / "acts-copy"), "moved"))
    assert result.curve[0]["step"] >= STEP        # continued from the checkpoint


def test_an_overflowing_store_is_one_error_without_a_warning(tmp_path):
    h = synthetic_activations(256, 16)
    h[3, 2] = 1e38                                # finite, but its square is not in float32
    acts = store_array(tmp_path / "acts", h, "test-model", "none")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Vs2Error, match="square overflows float32"):
            train_sae(TrainConfig(acts, tmp_path / "sae", expansion=2, k=4, epochs=1))
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


QUICKSTART_HIGHS = {"n_unlabeled": 100_000, "n_val_per_class": 10_000, "epochs": 10_000, "expansion": 256,
                    "k": 1 << 14, "batch_size": 1 << 20, "seed": 2**32 - 2}


@pytest.mark.parametrize("option, high", QUICKSTART_HIGHS.items())
def test_quickstart_config_owns_its_bounds(option, high):
    """The config refuses a count outside its bounds itself, whoever builds it (not only
    run_quickstart), naming the field, the bounds and the value; the bounds themselves pass."""
    low = 0 if option == "seed" else 1
    for bad in (low - 1, high + 1, 10**10, 2.0, True):
        with pytest.raises(Vs2Error, match=rf"^{option}: expected an int in \[{low}, {high}\], got {bad!r}$"):
            QuickstartConfig(**{option: bad})
    for good in (low, high):
        assert getattr(QuickstartConfig(**{option: good}), option) == good


@pytest.mark.parametrize("option, value", [("n_unlabeled", 10**10), ("n_val_per_class", 10**7),
                                           ("epochs", 10**6), ("epochs", 0)])
def test_quickstart_counts_are_bounded_before_anything_is_written(tmp_path, option, value):
    code, err = invoke("quickstart", "--workdir", tmp_path / "work", f"--{option.replace('_', '-')}", value)
    assert code == 2 and error_lines(err) == [
        f"vs2: error: {option}: expected an int in [1, {QUICKSTART_HIGHS[option]}], got {value}"], err[-1500:]
    assert not (tmp_path / "work").exists()


def test_quickstart_workdir_that_is_a_file_is_exit_2(tmp_path):
    (tmp_path / "file").write_text("")
    code, err = invoke("quickstart", "--workdir", tmp_path / "file")
    assert code == 2 and error_lines(err) == [
        f"vs2: error: --workdir: expected a folder, got a file ({tmp_path / 'file'} or a parent "
        "of it)"], err[-1500:]
