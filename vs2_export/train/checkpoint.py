"""What a training run leaves while it runs: checkpoints to resume from, and metrics.jsonl.

    out/checkpoint/state.pt   SAE + Adam + latent firing state + step (torch.save of tensors and
                              plain data; read back with weights_only=True, never a pickle)
    out/metrics.jsonl         one JSON record per logged step

Both are written by rank 0 only; the checkpoint atomically, so a kill -9 leaves the previous one.
Resuming restores every tensor that influences later steps and recomputes the data order from
(seed, epoch), so the resumed run ends with the weights of an uninterrupted one, bit for bit.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from ..artifacts import atomic_path
from ..config import TrainConfig, to_jsonable
from ..distributed import Comm, load_bytes
from ..errors import Vs2Error
from ..sae import TopKSAE
from .recipe import FireStats

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
# Options that may change between an interrupted run and its resumption.
FREE_OPTIONS = {"resume", "force", "device", "log_every", "checkpoint_every"}


def _pinned(cfg: TrainConfig) -> dict:
    return {k: v for k, v in to_jsonable(cfg).items() if k not in FREE_OPTIONS}


def save_checkpoint(out: Path, step: int, sae: TopKSAE, opt: torch.optim.Optimizer,
                    fires: FireStats, cfg: TrainConfig, store_id: str = "") -> None:
    """Atomically write out/checkpoint/state.pt for resuming at `step`; store_id: the content
    identity of the activations (store.StoreMeta.store_id), which resume compares."""
    state = {"step": step, "config": _pinned(cfg), "store_id": store_id, "sae": sae.state_dict(),
             "optimizer": opt.state_dict(), "since": fires.since.cpu(),
             "window": fires.window.cpu(),
             "window_samples": fires.window_samples}
    with atomic_path(Path(out) / CHECKPOINT_DIR / STATE_FILE) as tmp:
        torch.save(state, tmp)
    log.info("checkpoint at step %d", step)


def load_checkpoint(out: Path, cfg: TrainConfig, comm: Comm, store_id: str = "") -> dict | None:
    """The checkpoint's state on every rank (rank 0 reads, all receive), or None if there is none.
    A checkpoint of another configuration, or of another store (by content, not by path: a
    store re-extracted at the same path is another store), is refused, naming the difference."""
    path = Path(out) / CHECKPOINT_DIR / STATE_FILE
    data = path.read_bytes() if comm.main and path.is_file() else None
    data = comm.broadcast_bytes(data)
    if not data:
        return None
    try:
        state = load_bytes(data)
    except (RuntimeError, EOFError, ValueError) as exc:
        raise Vs2Error(f"resume: {path} is not a readable checkpoint ({exc})") from None
    if not isinstance(state, dict) or not {"step", "config", "sae", "optimizer"} <= set(state):
        raise Vs2Error(f"resume: {path} is not a vs2 training checkpoint")
    if state.get("store_id", "") != store_id:
        raise Vs2Error(f"resume: the checkpoint was trained on store "
                       f"{str(state.get('store_id') or 'unknown')[:12]}, but {cfg.acts} now holds "
                       f"store {store_id[:12]} (other content at the same path); train without "
                       "--resume, or with --force")
    differ = sorted(k for k, v in _pinned(cfg).items() if state["config"].get(k) != v)
    if differ:
        raise Vs2Error("resume: the checkpoint was made with other options: " + ", ".join(
            f"{k} (checkpoint {state['config'].get(k)!r}, now {_pinned(cfg)[k]!r})" for k in differ))
    return state


def restore(state: dict, sae: TopKSAE, opt: torch.optim.Optimizer, fires: FireStats) -> int:
    """Load a checkpoint's state into the run's objects; returns the step to continue from."""
    sae.load_state_dict(state["sae"])
    opt.load_state_dict(state["optimizer"])
    fires.since.copy_(state["since"])
    fires.window.copy_(state["window"])
    fires.window_samples = int(state["window_samples"])
    return int(state["step"])


def drop_checkpoint(out: Path) -> None:
    """Remove the checkpoint once the final SAE is written."""
    shutil.rmtree(Path(out) / CHECKPOINT_DIR, ignore_errors=True)


class MetricsLog:
    """metrics.jsonl of rank 0. On resume, records past the checkpoint's step are dropped (they
    are logged again), so the file reads as one run."""

    def __init__(self, out: Path, start_step: int, enabled: bool):
        self.path = Path(out) / METRICS_FILE
        self.enabled = enabled
        self.records: list[dict] = []
        if not enabled:
            return
        if start_step > 0 and self.path.is_file():
            lines = self.path.read_text().splitlines()
            self.records = [r for r in map(json.loads, filter(None, lines))
                            if r["step"] < start_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.records.append(record)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
