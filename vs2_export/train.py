"""acts/ -> sae/: train the top-k SAE (METHOD.md section 2).

Recipe (Gao et al. 2024): b_pre from the data mean; W_dec = W_enc^T with unit-norm rows, kept unit
norm with the parallel gradient removed; loss = FVU-normalised MSE + AuxK on dead latents;
Adam with lr 2e-4 / sqrt(n / 2^14), linear warm-up then linear decay; gradient clipping.
Batch size and epochs are ours (config.TrainConfig).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from .activations import ActivationStore
from .artifacts import claim_output, write_json
from .config import SAEConfig, TrainConfig, to_jsonable
from .sae import CFG_FILE, TopKSAE, save_sae
from .steering import sae_fvu

log = logging.getLogger(__name__)


@dataclass
class DeadTracker:
    """Samples since each latent last fired [n]; dead = more than `after` (Gao et al. 2024)."""

    since: torch.Tensor
    after: int

    def update(self, indices: torch.Tensor, values: torch.Tensor, batch: int) -> None:
        self.since += batch
        fired = indices[values > 0]
        self.since[fired] = 0

    def dead(self) -> torch.Tensor:
        return self.since > self.after


def aux_k_loss(sae: TopKSAE, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor,
               aux_k: int) -> torch.Tensor:
    """AuxK: the top aux_k DEAD latents must reconstruct what the live ones missed.

    pre [B, n] pre-activations, residual [B, d] = h - h_tilde (detached), dead [n] bool.
    Normalised by the residual's variance, like the main loss (Gao et al. 2024, appendix A.2).
    """
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    masked = pre.masked_fill(~dead, 0.0)
    values, indices = torch.topk(masked, min(aux_k, n_dead), dim=-1, sorted=False)
    recon = sae.decode_delta(values, indices)
    spread = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return (recon - residual).pow(2).sum(-1).mean() / spread


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then linear decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def init_sae(cfg: TrainConfig, store: ActivationStore) -> TopKSAE:
    """Seeded init with b_pre = mu = the data mean (METHOD.md section 2)."""
    torch.manual_seed(cfg.seed)
    sae = TopKSAE(SAEConfig(d=store.meta.d, expansion=cfg.expansion, k=cfg.k))
    mean = torch.from_numpy(store.mean().astype(np.float32))
    with torch.no_grad():
        sae.b_pre.copy_(mean)
        sae.mu.copy_(mean)
    return sae


def train_step(sae: TopKSAE, opt: torch.optim.Optimizer, h: torch.Tensor, dead: DeadTracker,
               cfg: TrainConfig, spread: float) -> dict[str, float]:
    """One Adam step on h [B, d]; returns the step's metrics."""
    pre = sae.pre_activations(h)
    values, indices = torch.topk(pre, sae.cfg.k, dim=-1, sorted=False)
    recon = sae.decode(values, indices)
    fvu = (recon - h).pow(2).sum(-1).mean() / spread
    aux = aux_k_loss(sae, pre, (h - recon).detach(), dead.dead(), cfg.aux_k or sae.cfg.d // 2)
    opt.zero_grad(set_to_none=True)
    (fvu + cfg.aux_coef * aux).backward()
    sae.remove_parallel_grads()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
    opt.step()
    sae.normalize_decoder()
    dead.update(indices.detach(), values.detach(), len(h))
    return {"fvu": fvu.item(), "aux": aux.item(), "l0": (values > 0).sum(-1).float().mean().item()}


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """The sparse decode's backward accumulates rows in thread order unless torch is told to be
    deterministic; a fixed seed must give bit-identical weights."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def train_sae(cfg: TrainConfig) -> dict:
    """Train and save the SAE; returns the train report (also written as train_report.json)."""
    claim_output(cfg.out / CFG_FILE, cfg.force)
    with deterministic():
        return _train(cfg)


def _train(cfg: TrainConfig) -> dict:
    store = ActivationStore(cfg.acts)
    sae = init_sae(cfg, store).to(cfg.device)
    lr = cfg.learning_rate(sae.cfg.n)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    steps_per_epoch = -(-len(store) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _schedule(s, total, int(cfg.warmup_frac * total)))
    dead = DeadTracker(torch.zeros(sae.cfg.n, dtype=torch.long, device=cfg.device), cfg.dead_after)
    rng = np.random.default_rng(cfg.seed)
    spread = _total_spread(store, sae.mu.cpu().numpy())
    curve, start = [], time.perf_counter()
    bar = tqdm(total=total, desc="train", unit="step", disable=None)
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(store))
        for b in range(steps_per_epoch):
            h = torch.from_numpy(store.take(order[b * cfg.batch_size:(b + 1) * cfg.batch_size]))
            metrics = train_step(sae, opt, h.to(cfg.device), dead, cfg, spread)
            sched.step()
            if bar.n % 50 == 0 or bar.n == total - 1:
                curve.append({"step": bar.n, "epoch": epoch, **metrics,
                              "dead_frac": float(dead.dead().float().mean())})
                bar.set_postfix(fvu=f"{metrics['fvu']:.3f}", dead=f"{curve[-1]['dead_frac']:.2f}")
            bar.update()
    bar.close()
    report = _final_report(sae.cpu().eval(), store, cfg, lr, total, time.perf_counter() - start)
    report["curve"] = curve
    save_sae(sae, cfg.out, extra={"train": {k: v for k, v in report.items() if k != "curve"}})
    write_json(cfg.out / "train_report.json", report)
    log.info("SAE trained: FVU %.4f, L0 %.1f, dead %.1f%%", report["fvu"], report["l0"],
             100 * report["dead_frac"])
    return report


def _total_spread(store: ActivationStore, mu: np.ndarray) -> float:
    """Mean ||h - mu||^2 over the store: the FVU denominator of the training loss."""
    total = sum(float(((b - mu) ** 2).sum(dtype=np.float64)) for b in store.iter_batches(8192))
    return max(total / max(len(store), 1), 1e-12)


@torch.no_grad()
def _final_report(sae: TopKSAE, store: ActivationStore, cfg: TrainConfig, lr: float, steps: int,
                  seconds: float) -> dict:
    """FVU (overall and per-sample), L0 and dead latents over the whole store, after training."""
    fired = torch.zeros(sae.cfg.n, dtype=torch.bool)
    l0_sum, err, spread = 0.0, 0.0, 0.0
    for batch in store.iter_batches(4096):
        h = torch.tensor(batch, dtype=torch.float32)
        values, indices = sae.encode(h)
        fired[indices[values > 0]] = True
        l0_sum += float((values > 0).sum())
        err += float((sae.decode(values, indices) - h).pow(2).sum())
        spread += float((h - sae.mu).pow(2).sum())
    per_sample = sae_fvu(sae, store)
    return {"fvu": err / max(spread, 1e-12), "l0": l0_sum / len(store),
            "dead_frac": float((~fired).float().mean()),
            "fvu_per_sample": {"median": float(np.median(per_sample)),
                               "p90": float(np.quantile(per_sample, 0.9)),
                               "p99": float(np.quantile(per_sample, 0.99))},
            "n": sae.cfg.n, "k": sae.cfg.k, "d": sae.cfg.d, "lr": lr, "steps": steps,
            "samples": len(store), "seconds": round(seconds, 2),
            "config": to_jsonable(cfg)}
