"""acts/ -> sae/: train the top-k SAE (docs/method.md section 2), resumable, data-parallel under torchrun.

The recipe lives in recipe.py, the sparse kernels in sparse.py, checkpoints and metrics.jsonl in
checkpoint.py. This module runs the loop: the data order of every epoch is a pure function of
(seed, epoch) (store.epoch_order: shards shuffled, then rows within a buffer), each rank reads
only its slice of each global batch through the store's memory maps, and rank 0 writes
metrics.jsonl, checkpoints, curves.png, then cfg.json + sae.safetensors + train_report.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..artifacts import claim_output, write_json
from ..config import TrainConfig, to_jsonable
from ..distributed import Comm, session
from ..errors import Vs2Error
from ..sae import CFG_FILE, TopKSAE, save_sae
from ..steering import fvu_per_sample
from ..store import ActivationStore, epoch_order
from .checkpoint import MetricsLog, drop_checkpoint, load_checkpoint, restore, save_checkpoint
from .plot import plot_curves
from .recipe import Batch, FireStats, init_sae, lr_factor, train_step
from .sparse import sparse_decode

log = logging.getLogger(__name__)
CURVES_FILE = "curves.png"
REPORT_FILE = "train_report.json"


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced (also train_report.json in the SAE folder)."""

    out: str
    """The SAE folder."""
    checksum: str
    """sae.sae_checksum of the written SAE (what steering.json will record)."""
    model: dict
    """The activations' origin: model id, source, weights SHA-256, store id (sae.sae_origin)."""
    fvu: float
    """FVU over the whole store with the final weights: sum ||h - h_tilde||^2 / sum ||h - mu||^2."""
    l0: float
    """Mean active latents per activation (<= k: ReLU may zero some)."""
    dead_frac: float
    """Latents that fired on none of the last `dead_window` training samples: THE dead fraction,
    the same statistic as metrics.jsonl's and curves.png's at every step."""
    dead_window: int
    """min(dead_after, activations in the store): a store smaller than dead_after samples would
    otherwise never show a dead latent."""
    fvu_per_sample: dict
    """median, p90, p99 of the per-activation FVU (the gate's statistic)."""
    n: int
    k: int
    d: int
    lr: float
    steps: int
    samples: int
    aux_k: int
    config: dict
    classes: tuple[str, ...] = ()
    """PASS classes (train --labels), else empty."""
    curve: tuple[dict, ...] = field(default=(), repr=False)
    """metrics.jsonl's records."""

    def to_dict(self, curve: bool = True) -> dict:
        data = {f: getattr(self, f) for f in self.__dataclass_fields__}
        data["classes"], data["curve"] = list(self.classes), list(self.curve) if curve else None
        if not curve:
            data.pop("curve")
        return data

    def to_json(self) -> str:
        """The result without the curve (metrics.jsonl has it), as a JSON document."""
        return json.dumps(self.to_dict(curve=False), indent=2)

    def format(self) -> str:
        """The lines `vs2 train` prints."""
        return (f"SAE in {self.out}: FVU {self.fvu:.4f}, L0 {self.l0:.1f}, dead latents "
                f"{100 * self.dead_frac:.1f}% (no fire in the last {self.dead_window} samples), "
                f"{self.steps} steps, checksum {self.checksum[:12]}")


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """A fixed seed must give bit-identical weights: have torch refuse nondeterministic kernels.
    On CUDA, torch then refuses every cuBLAS matmul unless cuBLAS runs with a fixed workspace
    (CUBLAS_WORKSPACE_CONFIG; torch's "Reproducibility" notes). torch reads it once, at the
    process's first cuBLAS call: set here, it covers `vs2 train` and any process whose first
    CUDA matmul is training; code that ran CUDA matmuls before train_sae must set it itself
    (torch's error then says so). A user's own setting wins."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def train_sae(cfg: TrainConfig) -> TrainResult:
    """Train and save the SAE; returns its TrainResult (also written as train_report.json).
    Under torchrun, every rank trains on its slice of each batch; all get the result.
    Non-finite activations, or a loss that becomes NaN or Inf, stop the run with a Vs2Error
    before anything is written: an existing SAE in cfg.out is never replaced by a broken one."""
    claim_output(cfg.out / CFG_FILE, cfg.force)
    with deterministic(), session(cfg.device) as (comm, device):
        return _train(cfg, comm, device)


def class_labels(store: ActivationStore) -> tuple[np.ndarray, list[str]]:
    """PASS labels from folder-per-class image paths: (labels [N] int64, class names sorted)."""
    images = store.images
    if images is None or len(images) != len(store):
        raise Vs2Error(f"train --labels: expected the store {store.folder} to record its images "
                       "(extract from a folder with one subfolder per class), got none")
    heads = [Path(p).parts[0] if len(Path(p).parts) > 1 else None for p in images]
    if None in heads:
        raise Vs2Error(f"train --labels: expected every image in a class folder, got "
                       f"{images[heads.index(None)]!r} at the top level")
    classes = sorted(set(heads))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[h] for h in heads], dtype=np.int64), classes


def _train(cfg: TrainConfig, comm: Comm, device: str) -> TrainResult:
    store = ActivationStore(cfg.acts)
    labels, classes = class_labels(store) if cfg.labels else (None, [])
    sae = init_sae(cfg, store).to(device)
    spread = _total_spread(store, sae.mu.cpu().numpy())
    if not (torch.isfinite(sae.mu).all() and torch.isfinite(sae.b_pre).all()
            and math.isfinite(spread)):
        raise Vs2Error(f"train: expected finite activations, got NaN or Inf (or values whose sum "
                       f"or square overflows float32) in {cfg.acts}; re-extract the store")
    lr = cfg.learning_rate(sae.cfg.n)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    fires = FireStats.zeros(sae.cfg.n, device)
    per_epoch = -(-len(store) // cfg.batch_size)
    total = per_epoch * cfg.epochs
    state = load_checkpoint(cfg.out, cfg, comm, store.meta.store_id) if cfg.resume else None
    start = restore(state, sae, opt, fires, cfg.out, total) if state else 0
    if cfg.resume:
        log.info("resume: %s", f"from step {start}" if state else "no checkpoint, from scratch")
    metrics = MetricsLog(cfg.out, start, comm.main)
    counts = [rows for _, rows in store.meta.shards]
    bar = tqdm(total=total, initial=start, desc="train", unit="step",
               disable=None if comm.main else True)
    order, epoch, clock = None, -1, (time.perf_counter(), 0)
    for step in range(start, total):
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            order = epoch_order(counts, cfg.seed, epoch, cfg.shuffle_buffer)
        rows = order[(step % per_epoch) * cfg.batch_size:][:cfg.batch_size]
        mine = rows[comm.part(len(rows))]
        batch = Batch(torch.from_numpy(store.take(mine)).to(device),
                      None if labels is None else torch.from_numpy(labels[mine]).to(device),
                      len(rows))
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(step, total, cfg)
        m = train_step(sae, opt, batch, cfg, fires, comm, spread, len(classes))
        _check_finite(m, step, lr * lr_factor(step, total, cfg), cfg)
        if step == 0 or (step + 1) % cfg.log_every == 0 or step + 1 == total:
            clock = _record(metrics, bar, m, step, epoch, fires, dead_window(cfg, len(store)), opt,
                            clock)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total \
                and comm.main:
            save_checkpoint(cfg.out, step + 1, sae, opt, fires, cfg, store.meta.store_id)
        bar.update()
    bar.close()
    return _finish(cfg, comm, sae, store, metrics, classes, lr, total, fires)


def _check_finite(m: dict, step: int, lr: float, cfg: TrainConfig) -> None:
    """A diverged run stops at the step it diverged, before any checkpoint or SAE is written."""
    bad = {k: m[k] for k in ("fvu", "aux", "pass") if not math.isfinite(m[k])}
    if bad:
        raise Vs2Error(f"train: the loss became non-finite at step {step} ({bad}, lr {lr:.3g}); "
                       f"expected finite losses: lower --lr or --aux-coef; {cfg.out} keeps what it "
                       "held before")


def dead_window(cfg: TrainConfig, samples: int) -> int:
    """THE window of the dead-latent fraction (curves and final report alike)."""
    return max(1, min(cfg.dead_after, samples))


def _dead_frac(fires: FireStats, window: int) -> float:
    """Latents that fired on none of the last `window` samples (since counts from the start)."""
    return float((fires.since >= window).double().mean())


def _record(metrics: MetricsLog, bar: tqdm, m: dict, step: int, epoch: int, fires: FireStats,
            window: int, opt: torch.optim.Optimizer, clock: tuple[float, int]) -> tuple:
    """Write one metrics record, refresh the progress bar; returns the new (time, samples) mark."""
    now, samples = time.perf_counter(), fires.window_samples
    per_sample = m.pop("per_sample_fvu")
    record = {"step": step, "epoch": epoch, "lr": opt.param_groups[0]["lr"], **m,
              "fvu_p50": float(per_sample.median()) if len(per_sample) else None,
              "fvu_p90": float(per_sample.quantile(0.9)) if len(per_sample) else None,
              "dead_frac": _dead_frac(fires, window),
              "dense_frac": fires.dense_frac(),
              "acts_per_s": round((samples - clock[1]) / max(now - clock[0], 1e-9), 1)}
    metrics.write(record)
    bar.set_postfix(fvu=f"{m['fvu']:.3f}", l0=f"{m['l0']:.1f}", dead=f"{record['dead_frac']:.2f}",
                    act_s=f"{record['acts_per_s']:.0f}")
    fires.window.zero_()
    fires.window_samples = 0
    return time.perf_counter(), 0


def _finish(cfg: TrainConfig, comm: Comm, sae: TopKSAE, store: ActivationStore,
            metrics: MetricsLog, classes: list[str], lr: float, total: int,
            fires: FireStats) -> TrainResult:
    """Rank 0 evaluates and writes the SAE, report and curves; every rank returns the result."""
    result = None
    if comm.main:
        report = _final_report(sae.cpu().eval(), store, cfg, lr, total)
        if not all(math.isfinite(report[k]) for k in ("fvu", "l0")):
            raise Vs2Error(f"train: the final SAE gives FVU {report['fvu']}; expected a finite "
                           f"value; {cfg.out} keeps what it held before")
        window = dead_window(cfg, len(store))
        report.update(dead_frac=_dead_frac(fires, window), dead_window=window)
        report["classes"] = classes
        checksum = save_sae(sae, cfg.out, extra={"train": report}, origin=store.origin)
        result = TrainResult(out=str(cfg.out), checksum=checksum, model=store.origin,
                             **{**report, "classes": tuple(classes),
                                "curve": tuple(metrics.records)})
        write_json(cfg.out / REPORT_FILE, result.to_dict())
        plot_curves(metrics.records, cfg.out / CURVES_FILE)
        drop_checkpoint(cfg.out)
        log.info("SAE trained: FVU %.4f, L0 %.1f, dead %.1f%%", result.fvu, result.l0,
                 100 * result.dead_frac)
    comm.barrier()
    return comm.gather(result)[0] if comm.world > 1 else result


def _total_spread(store: ActivationStore, mu: np.ndarray) -> float:
    """Mean ||h - mu||^2 over the store: the FVU denominator of the training loss. Squared in
    float32 like the loss: a value whose square overflows there gives inf, which the caller
    refuses (numpy's overflow warning would only print a source line before that error)."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = sum(float(((b - mu) ** 2).sum(dtype=np.float64)) for b in store.iter_batches(8192))
    return max(total / max(len(store), 1), 1e-12)


@torch.no_grad()
def _final_report(sae: TopKSAE, store: ActivationStore, cfg: TrainConfig, lr: float,
                  steps: int) -> dict:
    """FVU (overall and per-sample) and L0 over the whole store, and the recipe.
    Decodes with the sparse kernel: the exported decode_delta gathers [B, k, d] (805 MB for a
    4096 x 64 x 768 batch), which would dominate the run's peak memory."""
    l0_sum, err, spread, done = 0.0, 0.0, 0.0, 0
    # Filled in place: a small array kept per batch pins the heap between the batches' large
    # freed temporaries, and glibc then cannot return them (RSS grew with the store's size).
    per_sample = np.empty(len(store), dtype=np.float64)
    for batch in store.iter_batches(1024):
        h = torch.tensor(batch, dtype=torch.float32)
        values, indices = sae.encode(h)
        l0_sum += float((values > 0).sum())
        recon = sparse_decode(values, indices, sae.W_dec) + sae.b_pre
        err += float((recon - h).pow(2).sum())
        spread += float((h - sae.mu).pow(2).sum())
        per_sample[done:done + len(h)] = fvu_per_sample(h, recon, sae.mu).double().numpy()
        done += len(h)
    return {"fvu": err / max(spread, 1e-12), "l0": l0_sum / len(store),
            "fvu_per_sample": {"median": float(np.median(per_sample)),
                               "p90": float(np.quantile(per_sample, 0.9)),
                               "p99": float(np.quantile(per_sample, 0.99))},
            "n": sae.cfg.n, "k": sae.cfg.k, "d": sae.cfg.d, "lr": lr, "steps": steps,
            "samples": len(store), "aux_k": min(cfg.aux_k or sae.cfg.d // 2, sae.cfg.n),
            "config": to_jsonable(cfg)}
