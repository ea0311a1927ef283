"""Data larger than memory: training on a store twice the allowance stays within the allowance.

The run happens in a subprocess, sampled every 10 ms: its private anonymous memory plus the resident
pages of the store's shards it has mapped, against the same after a warm-up run on a small store
(allocator pools, lazy imports). Torch's library pages are left out: file-backed code, not data.
A reader that loaded the store, or kept its shards mapped (mapped pages stay resident), fails.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from vs2_export.store import store_array

ALLOWANCE_MB = 64  # training itself needs ~35 MiB here (batch, buffer, Adam); a loaded store 128
RUN = """
import json, sys, threading, time
import torch
from vs2_export.config import TrainConfig
from vs2_export.train import train_sae

def data_mb(store):
    # Private anonymous memory + resident pages of mapped store shards: what the data costs.
    # (Library code pages are file-backed too, but they are not data and vary with the kernel.)
    anon, mapped, in_store = 0, 0, False
    for line in open("/proc/self/smaps"):
        if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            in_store = store in line
        elif line.startswith("Rss:") and in_store:
            mapped += int(line.split()[1])
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            anon = int(line.split()[1])
    return (anon + mapped) / 1024

def config(acts, out):
    return TrainConfig(acts, out, expansion=2, k=8, batch_size=4096, epochs=1, init_sample=2048,
                       shuffle_buffer=16384, log_every=8)
torch.set_num_threads(1)
train_sae(config(sys.argv[3], sys.argv[2] + "-warmup"))     # allocator pools, lazy imports
base, peak, done = data_mb(sys.argv[1]), [0.0], []
def sample():
    while not done:
        peak[0] = max(peak[0], data_mb(sys.argv[1]))
        time.sleep(0.01)
thread = threading.Thread(target=sample)
thread.start()
report = train_sae(config(sys.argv[1], sys.argv[2]))
done.append(1)
thread.join()
print(json.dumps({"base_mb": base, "peak_mb": peak[0], "fvu": report.fvu}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_stays_within_allowance_on_a_store_twice_as_large(tmp_path):
    rng = np.random.default_rng(0)
    h = rng.standard_normal((262144, 128), dtype=np.float32)       # 128 MiB = 2 x allowance
    store = store_array(tmp_path / "acts", h, "test-model", "none", shard_size=8192)
    warmup = store_array(tmp_path / "small", h[:16384], "test-model", "none", shard_size=8192)
    del h
    store_mb = sum(f.stat().st_size for f in store.glob("*.npy")) / 2**20
    assert store_mb >= 2 * ALLOWANCE_MB
    out = subprocess.run([sys.executable, "-c", RUN, str(store), str(tmp_path / "sae"), str(warmup)],
                         capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    grown = result["peak_mb"] - result["base_mb"]
    assert grown < ALLOWANCE_MB, f"peak grew {grown:.1f} MiB on a {store_mb:.0f} MiB store"
    assert result["fvu"] < 1.5
