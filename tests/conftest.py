"""Shared fixtures. Everything is CPU-only and offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vs2_export.store import store_array


def synthetic_activations(n: int = 2048, d: int = 32, rank: int = 8, seed: int = 0) -> np.ndarray:
    """h [n, d]: a sparse combination of `rank * 4` fixed directions plus noise and an offset,
    the kind of data a top-k SAE can reconstruct well."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((rank * 4, d))
    codes = rng.random((n, rank * 4)) * (rng.random((n, rank * 4)) < 0.15)
    return (codes @ atoms + 3.0 + 0.01 * rng.standard_normal((n, d))).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    """A small activation store of synthetic h [2048, 32]."""
    return store_array(tmp_path / "acts", synthetic_activations(), "test-model", "none",
                       shard_size=700)


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is fastest, and immune to other jobs on the 2 shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
