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
import re
import shutil
from pathlib import Path

import torch

from ..artifacts import atomic_path
from ..config import TrainConfig, to_jsonable
from ..distributed import Comm, load_bytes
from ..errors import Vs2Error
from ..runtime.preprocess import is_finite_number, is_int
from ..sae import TopKSAE
from .plot import PANELS
from .recipe import FireStats

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
# Options that may change between an interrupted run and its resumption. `out` holds the
# checkpoint, so any spelling of it (or a moved run folder) is the same run; `acts` is compared by
# content (store_id), which a path cannot tell (a relative one, a moved or re-extracted store).
FREE_OPTIONS = {"resume", "force", "device", "log_every", "checkpoint_every", "out", "acts"}
# What restoring may raise on a checkpoint that does not fit the run (missing or wrong-typed
# entries, shapes): each is a bad file, reported as one, never a crash.
_UNFIT = (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError)


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
    # Foreign bytes make the weights-only unpickler raise about anything (UnpicklingError,
    # EOFError, IndexError, ...): every such failure means the file is not a checkpoint.
    except Exception as exc:  # noqa: BLE001
        raise Vs2Error(f"resume: {path} is not a readable checkpoint ({_reason(exc)})") from None
    if not _is_checkpoint(state):
        raise Vs2Error(f"resume: {path} is not a vs2 training checkpoint")
    if state.get("store_id", "") != store_id:
        raise Vs2Error(f"resume: the checkpoint was trained on store "
                       f"{str(state.get('store_id') or 'unknown')[:12]}, but {cfg.acts} now holds "
                       f"store {store_id[:12]} (other content at the same path, or another "
                       "store); train without --resume, or with --force")
    differ = sorted(k for k, v in _pinned(cfg).items() if state["config"].get(k) != v)
    if differ:
        raise Vs2Error("resume: the checkpoint was made with other options: " + ", ".join(
            f"{k} (checkpoint {state['config'].get(k)!r}, now {_pinned(cfg)[k]!r})" for k in differ))
    return state


def _is_checkpoint(state: object) -> bool:
    """The entries load_checkpoint compares, of the types it compares (a tensor among the
    options would make `!=` a tensor, whose truth value raises)."""
    plain = (str, int, float, bool, type(None))
    return (isinstance(state, dict) and {"step", "config", "sae", "optimizer"} <= set(state)
            and isinstance(state["config"], dict)
            and all(isinstance(v, plain) for v in state["config"].values())
            and isinstance(state.get("store_id", ""), str))


def _reason(exc: BaseException) -> str:
    """One short line for an error about a checkpoint file."""
    if isinstance(exc, KeyError):
        return f"no entry {exc}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.removeprefix("Error(s) in loading state_dict for TopKSAE: ")
    # torch's weights-only refusal: keep its cause, not its advice to unpickle (never taken here).
    refused = (re.search(r"WeightsUnpickler error: (.*?)\s*Check the documentation", text)
               or re.search(r"trusted source\.\s*(.*?)\s*Check the documentation", text))
    if refused:
        text = f"it holds more than tensors and plain data: {refused.group(1)}"
    return text if len(text) <= 300 else text[:297] + "..."


def restore(state: dict, sae: TopKSAE, opt: torch.optim.Optimizer, fires: FireStats, out: Path,
            total: int) -> int:
    """Load a checkpoint's state into the run's objects; returns the step to continue from.
    A state that does not fit the run (shapes, types, a step past its `total` steps, NaN or Inf,
    which would surface later as a diverged loss blamed on --lr) is refused, naming the file."""
    path = Path(out) / CHECKPOINT_DIR / STATE_FILE
    try:
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < total:
            raise ValueError(f"step: expected an integer in [0, {total}), got {step!r}")
        _check_tensors("sae", state["sae"])
        sae.load_state_dict(state["sae"])
        _load_moments(opt, state["optimizer"])
        for name in ("since", "window"):
            _load_counts(name, state[name], getattr(fires, name))
        samples = state["window_samples"]
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValueError(f"window_samples: expected an integer >= 0, got {samples!r}")
        fires.window_samples = samples
    except _UNFIT as exc:
        raise Vs2Error(f"resume: {path} is not a usable checkpoint of this run ({_reason(exc)}); "
                       "train without --resume to start over") from None
    return step


def _check_tensors(where: str, entries: object) -> None:
    """Every value of `entries` a dense real tensor, finite when floating."""
    if not isinstance(entries, dict):
        raise TypeError(f"{where}: expected a dict of tensors, got {type(entries).__name__}")
    for key, value in entries.items():
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided \
                or value.is_complex() or value.is_quantized or value.dtype == torch.bool:
            raise TypeError(f"{where}.{key}: expected a dense real tensor, got "
                            f"{type(value).__name__}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{where}.{key} holds NaN or Inf")


def _load_moments(opt: torch.optim.Optimizer, saved: object) -> None:
    """Adam's per-parameter moments, checked against the parameters: Adam's own load_state_dict
    checks only the number of parameters, and a moment of another shape would fail at the next
    step. The hyperparameters stay the run's own: the pinned options made both, and the loop
    sets lr before every step."""
    params = [p for group in opt.param_groups for p in group["params"]]
    moments = saved["state"] if isinstance(saved, dict) else None
    if not isinstance(moments, dict) or not set(moments) <= set(range(len(params))):
        raise TypeError(f"optimizer.state: expected Adam moments of {len(params)} parameters")
    for index, entry in moments.items():
        _check_tensors(f"optimizer.state.{index}", entry)
        if set(entry) != {"step", "exp_avg", "exp_avg_sq"} or entry["step"].numel() != 1 \
                or entry["exp_avg"].shape != params[index].shape \
                or entry["exp_avg_sq"].shape != params[index].shape \
                or bool((entry["exp_avg_sq"] < 0).any()) or float(entry["step"]) < 0:
            raise ValueError(f"optimizer.state.{index}: expected Adam's step, exp_avg and "
                             f"exp_avg_sq >= 0 of shape {tuple(params[index].shape)}")
    opt.load_state_dict({"state": moments, "param_groups": opt.state_dict()["param_groups"]})


def _load_counts(name: str, value: object, target: torch.Tensor) -> None:
    """A firing counter: integers >= 0 of exactly the run's shape (copy_ would broadcast)."""
    if not isinstance(value, torch.Tensor) or value.shape != target.shape \
            or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool \
            or value.layout != torch.strided or value.is_quantized or bool((value < 0).any()):
        raise ValueError(f"{name}: expected {tuple(target.shape)} counts >= 0")
    target.copy_(value)


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
            self.records = [r for r in _records(self.path) if r["step"] < start_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.records.append(record)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _records(path: Path) -> list[dict]:
    """metrics.jsonl's records, each checked as far as the resumed run uses it (its step, and
    the numbers curves.png draws): a damaged line is refused by number, not met as a crash."""
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line:
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):   # RecursionError: a line of 10^5 '['
            record = None
        step = record.get("step") if isinstance(record, dict) else None
        if not (is_int(step) and step >= 0 and all(
                record.get(key) is None or is_finite_number(record.get(key)) for key, _ in PANELS)):
            raise Vs2Error(f"resume: {path} line {number}: expected a metrics record (a JSON "
                           f"object: an integer step, finite numbers), got {line[:60]!r}; remove "
                           "the file to resume without the earlier curve")
        records.append(record)
    return records
