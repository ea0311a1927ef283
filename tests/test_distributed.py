"""torchrun data parallelism on gloo with 2 CPU processes, checked against one process."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pipeline import noise_images

from vs2_export.config import ExtractConfig, ModelSpec, TrainConfig
from vs2_export.extract import extract
from vs2_export.sae import load_sae
from vs2_export.store import ActivationStore
from vs2_export.train import train_sae


def torchrun(*args: str) -> None:
    """python -m torch.distributed.run --standalone --nproc-per-node 2 -m vs2_export.cli ..."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "vs2_export.cli", *args],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_process_extraction_equals_one_process(tmp_path):
    images = noise_images(tmp_path / "images", 11, size=48)
    extract(ExtractConfig(images, tmp_path / "one", ModelSpec(), batch_size=4, shard_size=4))
    torchrun("extract", "--model", "vs2-demo", "--images", str(images), "--out", str(tmp_path / "two"),
             "--batch-size", "4", "--shard-size", "4")
    one, two = ActivationStore(tmp_path / "one"), ActivationStore(tmp_path / "two")
    assert two.images == one.images                       # same rows, same order
    assert {name.split("-")[2] for name, _ in two.meta.shards} == {"r000", "r001"}
    np.testing.assert_allclose(two.take(np.arange(11)), one.take(np.arange(11)), atol=1e-5)


def test_two_process_training_equals_one_process(store, tmp_path):
    common = dict(expansion=4, k=8, batch_size=256, epochs=3, dead_after=512)
    train_sae(TrainConfig(store, tmp_path / "one", **common))
    torchrun("train", "--acts", str(store), "--out", str(tmp_path / "two"), "--k", "8",
             "--expansion", "4", "--batch-size", "256", "--epochs", "3", "--dead-after", "512")
    one, two = load_sae(tmp_path / "one")[0], load_sae(tmp_path / "two")[0]
    for name, tensor in one.state_dict().items():
        torch.testing.assert_close(two.state_dict()[name], tensor, rtol=1e-4, atol=1e-4)
