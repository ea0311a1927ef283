"""Training-time top-k SAE kernels that touch only the active latents (docs/method.md section 2).

The exported path (TopKSAE.encode / decode_delta) is left alone: it must stay exportable and its
numerics are what parity checks. Training instead needs a backward pass that is NOT dense:

    encode:  values = pre[b, idx]  with pre = ReLU(W_enc (h - b_pre) + b_enc)   dense forward
             dW_enc  = G^T (h - b_pre)       G: [B, n] sparse, nonzero only at the selected idx
    decode:  W_dec c = C W_dec               C: [B, n] sparse (values at idx)
             dW_dec  = C^T dY,  dvalues = (dY W_dec^T) sampled at idx (sampled_addmm)

so a step costs one dense encoder matmul (2 B d n FLOPs) plus O(B k d), against 3 dense matmuls for
plain autograd (the 0.014 GFLOPs / sample of docs/method.md section 2). CSR products on CPU are
deterministic: each output row is summed by one thread in index order.
"""

from __future__ import annotations

import warnings

import torch


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple) -> torch.Tensor:
    """A CSR tensor, without torch's beta / invariant-check warnings: ours come from topk
    output and are valid by construction."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape)


def _rows_csr(indices: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """[B, k] (indices, values) -> sparse CSR [B, n] with k entries per row."""
    b, k = indices.shape
    crow = torch.arange(0, b * k + 1, k, device=indices.device)
    return _csr(crow, indices.reshape(-1), values.reshape(-1), (b, n))


def _transpose_product(indices: torch.Tensor, values: torch.Tensor, n: int,
                       dense: torch.Tensor) -> torch.Tensor:
    """C^T @ dense for C = [B, n] sparse from (indices, values) [B, k]; dense [B, d] -> [n, d]."""
    b, k = indices.shape
    flat = indices.reshape(-1)
    order = torch.argsort(flat, stable=True)
    crow = torch.zeros(n + 1, dtype=torch.long, device=flat.device)
    crow[1:] = torch.bincount(flat, minlength=n).cumsum(0)
    col = torch.div(order, k, rounding_mode="floor")
    ct = _csr(crow, col, values.reshape(-1)[order], (n, b))
    return ct @ dense


class _SparseDecode(torch.autograd.Function):
    """(values [B, k], indices [B, k], W_dec [n, d]) -> W_dec c [B, d], sparse backward."""

    @staticmethod
    def forward(ctx, values, indices, W_dec):
        ctx.save_for_backward(values, indices, W_dec)
        return _rows_csr(indices, values, W_dec.shape[0]) @ W_dec

    @staticmethod
    def backward(ctx, grad):
        values, indices, W_dec = ctx.saved_tensors
        grad = grad.contiguous()
        d_values = d_w = None
        if ctx.needs_input_grad[0]:
            pattern = _rows_csr(indices, torch.zeros_like(values), W_dec.shape[0])
            sampled = torch.sparse.sampled_addmm(pattern, grad, W_dec.t(), beta=0.0)
            d_values = sampled.values().reshape(values.shape)
        if ctx.needs_input_grad[2]:
            d_w = _transpose_product(indices, values, W_dec.shape[0], grad)
        return d_values, None, d_w


class _SelectedPre(torch.autograd.Function):
    """The selected pre-activations as a function of (W_enc, b_enc, b_pre), sparse backward.

    Forward returns `values` (already computed without a graph); backward routes dvalues only to
    the selected (row, latent) pairs, masked by the ReLU (values > 0)."""

    @staticmethod
    def forward(ctx, W_enc, b_enc, b_pre, x, indices, values):
        ctx.save_for_backward(W_enc, x, indices, values)
        return values.clone()

    @staticmethod
    def backward(ctx, grad):
        W_enc, x, indices, values = ctx.saved_tensors
        g = grad * (values > 0)
        n = W_enc.shape[0]
        per_latent = torch.zeros(n, dtype=g.dtype, device=g.device)
        per_latent.index_add_(0, indices.reshape(-1), g.reshape(-1))
        d_w = _transpose_product(indices, g, n, x)
        return d_w, per_latent, -(per_latent @ W_enc), None, None, None


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """W_dec c [B, d] from (values, indices) [B, k] and W_dec [n, d] (rows = latents)."""
    if indices.shape[1] == 0:
        return values.new_zeros(values.shape[0], W_dec.shape[1])
    return _SparseDecode.apply(values, indices, W_dec)


def select_pre(W_enc: torch.Tensor, b_enc: torch.Tensor, b_pre: torch.Tensor, x: torch.Tensor,
               indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Attach a sparse gradient to pre-activations gathered at indices [B, k'].

    x [B, d] = h - b_pre (no graph); values [B, k'] = ReLU(W_enc x + b_enc) at indices."""
    return _SelectedPre.apply(W_enc, b_enc, b_pre, x, indices, values)
