"""The top-k SAE training recipe (docs/method.md section 2; Gao et al. 2024): init, schedule, losses,
and one data-parallel step.

    loss = FVU  +  aux_coef * AuxK  [+ pass_coef * PASS]             (each normalised, see below)

FVU and PASS are divided by the store's mean ||h - mu||^2 (a constant: one scale for the whole
run); AuxK by the variance of the batch's residual (Gao et al. 2024, appendix A.2). Every sum is
over the GLOBAL batch: each rank adds its rows' part and the gradients are summed, so N ranks
take the step one process would (up to float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import SAEConfig, TrainConfig
from ..distributed import Comm
from ..sae import TopKSAE
from ..store import ActivationStore
from .sparse import select_pre, sparse_decode


def geometric_median(x: torch.Tensor, iters: int = 200, tol: float = 1e-7) -> torch.Tensor:
    """Weiszfeld's algorithm: argmin_m sum_i ||x_i - m|| for x [m, d] -> [d] (float64 inside)."""
    x = x.double()
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=-1).clamp_min(1e-12)
        new = (w[:, None] * x).sum(0) / w.sum()
        if (new - m).norm() <= tol * m.norm().clamp_min(1e-12):
            return new.float()
        m = new
    return m.float()


def init_sae(cfg: TrainConfig, store: ActivationStore) -> TopKSAE:
    """Seeded init; b_pre = geometric median (or mean) of a sample, mu = the data mean."""
    torch.manual_seed(cfg.seed)
    sae = TopKSAE(SAEConfig(d=store.meta.d, expansion=cfg.expansion, k=cfg.k))
    mean = torch.from_numpy(store.mean().astype(np.float32))
    if cfg.b_pre_init == "median":
        rng = np.random.default_rng(cfg.seed)
        rows = np.sort(rng.choice(len(store), min(cfg.init_sample, len(store)), replace=False))
        b_pre = geometric_median(torch.from_numpy(store.take(rows)))
    else:
        b_pre = mean
    with torch.no_grad():
        sae.b_pre.copy_(b_pre)
        sae.mu.copy_(mean)                 # the gate's FVU centre is the mean (docs/method.md s. 4)
        if not cfg.tied_init:
            sae.W_dec.normal_()
            sae.normalize_decoder()
    return sae


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, flat, then linear decay to 0 over the last decay_frac of the steps."""
    warmup = int(cfg.warmup_frac * total)
    decay_start = max(warmup, int((1 - cfg.decay_frac) * total))
    if step < warmup:
        return (step + 1) / warmup
    if step < decay_start:
        return 1.0
    return max(0.0, (total - step) / max(1, total - decay_start))


@dataclass
class FireStats:
    """Per-latent firing: samples since each last fired [n] (dead = more than dead_after), and
    fires in the current logging window [n] (dense = fires on more than 10% of its samples)."""

    since: torch.Tensor
    window: torch.Tensor
    window_samples: int = 0

    @classmethod
    def zeros(cls, n: int, device: str | torch.device = "cpu") -> FireStats:
        return cls(torch.zeros(n, dtype=torch.long, device=device),
                   torch.zeros(n, dtype=torch.long, device=device))

    def update(self, counts: torch.Tensor, samples: int) -> None:
        self.since += samples
        self.since[counts > 0] = 0
        self.window += counts
        self.window_samples += samples

    def dead(self, after: int) -> torch.Tensor:
        return self.since > after

    def dense_frac(self) -> float:
        frac = self.window.double() / max(self.window_samples, 1)
        return float((frac > 0.1).double().mean())


def aux_k_loss(sae: TopKSAE, values: torch.Tensor, indices: torch.Tensor, residual: torch.Tensor,
               variance: torch.Tensor) -> torch.Tensor:
    """AuxK summed over rows: dead latents (values, indices) [B, k_aux] must reconstruct what the
    live ones missed, residual [B, d] (detached); divide by rows for the mean. `variance` = the
    residual's variance ||e - mean e||^2 averaged over the global batch."""
    recon = sparse_decode(values, indices, sae.W_dec)
    return (recon - residual).pow(2).sum() / variance.clamp_min(1e-12)


def residual_variance(e: torch.Tensor, n_global: int, comm: Comm) -> torch.Tensor:
    """Mean ||e_i - mean(e)||^2 over the global batch, e [b, d] this rank's rows."""
    stats = torch.cat([e.double().sum(0), e.double().pow(2).sum().reshape(1)])
    comm.sum_(stats)
    total, sq = stats[:-1], stats[-1]
    return ((sq - total.pow(2).sum() / n_global) / n_global).float()


def pass_loss(values: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor, n: int,
              n_classes: int, comm: Comm) -> torch.Tensor:
    """PASS (docs/method.md s. 6) summed over rows: ||c_i - P_{y_i}||^2, P_y = mean code of class y in
    the global batch, detached (ours: ranks then sum class totals only, no gradient traffic).
    values, indices [B, k] (c_i sparse), labels [B] int64 in [0, n_classes)."""
    with torch.no_grad():
        sums = torch.zeros(n_classes, n, dtype=torch.float64, device=values.device)
        rows = labels[:, None].expand_as(indices)
        sums.index_put_((rows, indices), values.detach().double(), accumulate=True)
        counts = torch.bincount(labels, minlength=n_classes).double()
        comm.sum_(sums)
        comm.sum_(counts)
        protos = (sums / counts.clamp_min(1)[:, None]).float()
    picked = protos[rows, indices]                                   # P_y at c_i's support
    per_row = values.pow(2).sum(-1) - 2 * (values * picked).sum(-1) + protos.pow(2).sum(-1)[labels]
    return per_row.sum()


@dataclass
class Batch:
    """This rank's rows of one global batch."""

    h: torch.Tensor
    """[b, d] activations."""
    labels: torch.Tensor | None
    """[b] class ids (PASS) or None."""
    n_global: int
    """Rows in the global batch (all ranks)."""


def _select(sae: TopKSAE, x: torch.Tensor, dead: torch.Tensor, cfg: TrainConfig):
    """Top-k live latents and, when some are dead, the top aux_k dead ones (no graph)."""
    with torch.no_grad():
        pre = F.relu(F.linear(x, sae.W_enc, sae.b_enc))
        values, indices = pre.topk(sae.cfg.k, dim=-1, sorted=False)
        n_dead = int(dead.sum())
        if cfg.aux_coef == 0 or n_dead == 0:
            return values, indices, 0
        aux_k = min(cfg.aux_k or sae.cfg.d // 2, n_dead)
        aux_v, aux_i = pre.masked_fill_(~dead, 0.0).topk(aux_k, dim=-1, sorted=False)
        return torch.cat([values, aux_v], 1), torch.cat([indices, aux_i], 1), aux_k


def _losses(sae: TopKSAE, batch: Batch, cfg: TrainConfig, fires: FireStats, comm: Comm,
            spread: float, n_classes: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Forward: (loss, live indices [b, k], this rank's sums of err / l0 / aux / pass)."""
    h, k = batch.h, sae.cfg.k
    x = h - sae.b_pre.detach()
    pre_values, indices, aux_k = _select(sae, x, fires.dead(cfg.dead_after), cfg)
    values = select_pre(sae.W_enc, sae.b_enc, sae.b_pre, x, indices, pre_values)
    recon = sparse_decode(values[:, :k], indices[:, :k], sae.W_dec) + sae.b_pre
    err = (recon - h).pow(2).sum(-1)
    scale = batch.n_global * spread
    loss = err.sum() / scale
    sums = {"err": err.detach().sum(), "l0": (pre_values[:, :k] > 0).sum(), "aux": 0.0, "pass": 0.0,
            "per_sample": err.detach() / (h - sae.mu).pow(2).sum(-1).clamp_min(1e-12)}
    if aux_k:
        e = (h - recon).detach()
        aux = aux_k_loss(sae, values[:, k:], indices[:, k:], e,
                         residual_variance(e, batch.n_global, comm)) / batch.n_global
        loss = loss + cfg.aux_coef * aux
        sums["aux"] = aux.detach()
    if batch.labels is not None and cfg.pass_coef > 0:
        pas = pass_loss(values[:, :k], indices[:, :k], batch.labels, sae.cfg.n, n_classes,
                        comm) / scale
        loss = loss + cfg.pass_coef * pas
        sums["pass"] = pas.detach()
    return loss, indices[:, :k][pre_values[:, :k] > 0], sums


def train_step(sae: TopKSAE, opt: torch.optim.Optimizer, batch: Batch, cfg: TrainConfig,
               fires: FireStats, comm: Comm, spread: float, n_classes: int = 0) -> dict:
    """One Adam step on the global batch; returns its metrics (global, except per_sample)."""
    loss, fired, sums = _losses(sae, batch, cfg, fires, comm, spread, n_classes)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in sae.parameters() if p.grad is not None]
    if comm.world > 1:                     # one all-reduce for every gradient
        flat = comm.sum_(torch.cat([p.grad.reshape(-1) for p in params]))
        torch.nn.utils.vector_to_parameters(flat, [p.grad for p in params])
    if cfg.unit_decoder:
        sae.remove_parallel_grads()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    if cfg.unit_decoder:
        sae.normalize_decoder()
    counts = comm.sum_(torch.bincount(fired, minlength=sae.cfg.n))
    fires.update(counts, batch.n_global)
    total = comm.sum_(torch.tensor([float(sums[s]) for s in ("err", "l0", "aux", "pass")],
                                   dtype=torch.float64))
    return {"fvu": float(total[0]) / (batch.n_global * spread),
            "l0": float(total[1]) / batch.n_global, "aux": float(total[2]),
            "pass": float(total[3]), "per_sample_fvu": sums["per_sample"]}
