"""Shard contents are held to the SHA-256 meta.json lists (store.py): a shard edited in place
keeps its shape, and used to train and calibrate silently (rc 0) on rows that are not the ones
the store's identity names. Hashing happens once per shard file per process, not per epoch."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vs2_export import store as store_module
from vs2_export.errors import Vs2Error
from vs2_export.store import ActivationStore, store_array


@pytest.fixture
def acts(tmp_path):
    rng = np.random.default_rng(0)
    return store_array(tmp_path / "acts", rng.standard_normal((40, 8), dtype=np.float32),
                       "vs2-demo", "demo", shard_size=16)


def _edit(path, array: np.ndarray) -> None:
    """Rewrite a shard in place with a later mtime (the cache keys on it)."""
    before = os.stat(path).st_mtime_ns
    np.save(path, array)
    os.utime(path, ns=(before + 10**9, before + 10**9))


@pytest.mark.parametrize("read", ["iter_batches", "take", "mean"])
def test_an_edited_shard_is_refused_naming_it(acts, read):
    shard = acts / "shard-00001.npy"
    _edit(shard, np.load(shard)[::-1].copy())  # same shape and dtype, rows reordered
    store = ActivationStore(acts)  # meta.json alone is intact: opening still works
    with pytest.raises(Vs2Error, match=r"shard-00001\.npy does not match meta\.json"):
        {"iter_batches": lambda: list(store.iter_batches(8)),
         "take": lambda: store.take(np.arange(40)), "mean": store.mean}[read]()


def test_each_shard_is_hashed_once_per_process(acts, monkeypatch):
    store_module._VERIFIED.clear()
    store = ActivationStore(acts)
    hashed = []
    real = store_module._sha256
    monkeypatch.setattr(store_module, "_sha256", lambda fh, d: hashed.append(d) or real(fh, d))
    for _ in range(3):  # three epochs, both read paths
        list(store.iter_batches(8))
        store.take(np.arange(40)[::-1])
    assert len(hashed) == 3 * 2 * 3  # the call is made every map...
    assert len(store_module._VERIFIED) == 3  # ...but each file is read for hashing once
    shard = acts / "shard-00002.npy"
    _edit(shard, np.load(shard) + 1)  # an edit after verification is caught on the next read
    with pytest.raises(Vs2Error, match="shard-00002"):
        list(store.iter_batches(8))


def test_a_store_without_shard_checksums_still_reads(acts):
    meta = json.loads((acts / "meta.json").read_text())
    for entry in meta["shards"]:
        del entry["sha256"]
    (acts / "meta.json").write_text(json.dumps(meta))
    store = ActivationStore(acts)
    assert store.meta.shard_sha256 == (None, None, None)
    assert sum(len(b) for b in store.iter_batches(8)) == 40


def test_a_malformed_shard_checksum_is_refused(acts):
    meta = json.loads((acts / "meta.json").read_text())
    meta["shards"][0]["sha256"] = "not-hex"
    (acts / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(Vs2Error, match="shard-00000.npy sha256 to be 64 hex digits"):
        ActivationStore(acts)


def test_an_intact_store_reads_the_rows_it_wrote(acts):
    store_module._VERIFIED.clear()
    rows = ActivationStore(acts).take(np.array([39, 0, 17]))
    want = np.random.default_rng(0).standard_normal((40, 8), dtype=np.float32)[[39, 0, 17]]
    np.testing.assert_array_equal(rows, want)


def test_a_fifo_as_shard_is_refused_unopened(acts):
    shard = acts / "shard-00000.npy"
    shard.unlink()
    os.mkfifo(shard)
    with pytest.raises(Vs2Error, match="not a regular file"):
        ActivationStore(acts)
