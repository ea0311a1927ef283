"""Checkpoints: a run killed with SIGKILL mid-training resumes to bit-identical final weights."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vs2_export.config import TrainConfig
from vs2_export.errors import Vs2Error
from vs2_export.sae import load_sae
from vs2_export.train import train_sae

RUN = """
import json, sys
from vs2_export.config import TrainConfig
from vs2_export.train import train_sae
train_sae(TrainConfig(**json.loads(sys.argv[1])))
"""

pytestmark = pytest.mark.usefixtures("one_thread")



def options(store, out, **kw):
    return dict(acts=str(store), out=str(out), expansion=4, k=8, batch_size=128, epochs=12,
                checkpoint_every=20, log_every=10, **kw)


def kill_after_first_checkpoint(opts: dict, timeout: float = 60.0) -> None:
    """Start training in a subprocess, SIGKILL it as soon as a checkpoint exists."""
    state = os.path.join(opts["out"], "checkpoint", "state.pt")
    proc = subprocess.Popen([sys.executable, "-c", RUN, json.dumps(opts)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + timeout
    while not os.path.exists(state) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(state), "the run never wrote a checkpoint"


def test_killed_run_resumes_to_the_same_weights(store, tmp_path):
    whole = train_sae(TrainConfig(**options(store, tmp_path / "whole")))
    opts = options(store, tmp_path / "killed")
    kill_after_first_checkpoint(opts)
    assert not (tmp_path / "killed" / "cfg.json").exists(), "killed too late: the run finished"
    resumed = train_sae(TrainConfig(**{**opts, "resume": True}))
    a, b = load_sae(tmp_path / "whole")[0].state_dict(), load_sae(tmp_path / "killed")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.fvu == whole.fvu
    steps = [r["step"] for r in resumed.curve]
    assert steps == sorted(set(steps)) and steps == [r["step"] for r in whole.curve]


def test_resume_refuses_a_checkpoint_of_other_options(store, tmp_path):
    opts = options(store, tmp_path / "killed")
    kill_after_first_checkpoint(opts)
    with pytest.raises(Vs2Error, match="k \\(checkpoint 8, now 4\\)"):
        train_sae(TrainConfig(**{**opts, "k": 4, "resume": True}))


def test_resume_without_checkpoint_starts_fresh(store, tmp_path):
    report = train_sae(TrainConfig(**{**options(store, tmp_path / "sae"), "resume": True,
                                      "epochs": 1}))
    assert report.steps == 16
