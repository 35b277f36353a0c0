"""Layer-wise reconstruction of the kept weights with a fixed mask (METHOD.md §11.1; beyond the paper).

A layer is seen as rows ``w`` (one per output channel) over the d = K*Cin inputs of one output site;
``X_p`` (n x d) are its calibration inputs in the model being pruned, ``X_d`` the same sites in the dense
model (``target: dense_outputs``; ``X_d = X_p`` for ``target: dense_weights``). With

    H = X_p^T X_p / n,   C = X_p^T X_d / n,   damp = alpha * mean(diag H)

every row solves   min_{w^ : w^ = 0 off S}  ||X_p w^ - X_d w||^2 / n + damp * ||w^ - w||^2
(S: the row's kept set), i.e.  w^_S = b_S (H + damp I)[S, S]^-1  with  b = w (C + damp I)^T.
Damping enters H once, before both blocks are taken, so it shrinks the correction towards the dense
weights (the OBS / SparseGPT form), never the kept weights towards zero.

The solve is exact per row. With w* = b (H + damp I)^-1 (the unconstrained optimum) it is done in
whichever of two equivalent forms is smaller: the kept block (|S| x |S| Cholesky) or the pruned block
(OBS: w^ = w* - w*_P [(H^-1)_PP]^-1 (H^-1)_P:, |P| x |P|).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


class ReconstructionError(ValueError):
    """A layer's statistics cannot be reconstructed (no samples, too few samples for its rank)."""


class LayerStatistics:
    """Streamed second moments of one layer's calibration inputs (float64 accumulators).

    ``add(x_p, x_d)`` with row-sample matrices [n, d]; ``x_d`` is required when ``cross`` is true
    (``target: dense_outputs``) and must index the same output sites as ``x_p``.
    """

    def __init__(self, d: int, cross: bool = False):
        self.d, self.cross = int(d), bool(cross)
        self.n = 0
        self.h = torch.zeros(self.d, self.d, dtype=torch.float64)       # sum X_p^T X_p
        self.c = torch.zeros(self.d, self.d, dtype=torch.float64) if cross else None  # sum X_p^T X_d
        self.dd = torch.zeros(self.d, self.d, dtype=torch.float64) if cross else None  # sum X_d^T X_d

    def add(self, x_p: torch.Tensor, x_d: torch.Tensor | None = None) -> None:
        if x_p.ndim != 2 or x_p.shape[1] != self.d:
            raise ValueError(f"x_p of shape {tuple(x_p.shape)}: expected [n, {self.d}]")
        if self.cross:
            if x_d is None or x_d.shape != x_p.shape:
                raise ValueError(f"x_d {None if x_d is None else tuple(x_d.shape)}: expected {tuple(x_p.shape)}")
        if x_p.shape[0] == 0:
            return
        # per-chunk products in the inputs' precision, accumulated in float64 across chunks and frames
        x_p = x_p.detach()
        self.h += (x_p.T @ x_p).to(torch.float64).cpu()
        if self.cross:
            x_d = x_d.detach()
            self.c += (x_p.T @ x_d).to(torch.float64).cpu()
            self.dd += (x_d.T @ x_d).to(torch.float64).cpu()
        self.n += int(x_p.shape[0])

    @property
    def silent(self) -> bool:
        """No samples, or every recorded input is zero: any weights give a zero output, zeroing is optimal."""
        return self.n == 0 or not bool(torch.diagonal(self.h).any())

    def moments(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(H, C, D) = (X_p^T X_p, X_p^T X_d, X_d^T X_d) / n."""
        if self.n == 0:
            raise ReconstructionError("no calibration samples were recorded")
        h = self.h / self.n
        if not self.cross:
            return h, h, h
        return h, self.c / self.n, self.dd / self.n


def damping_value(h: torch.Tensor, alpha: float) -> float:
    """damp = alpha * mean(diag H) (METHOD §11.1)."""
    if alpha <= 0:
        raise ValueError(f"alpha={alpha!r}: expected a damping factor > 0")
    return float(alpha * torch.diagonal(h).mean())


def _cholesky_inverse(a: torch.Tensor) -> torch.Tensor:
    return torch.cholesky_inverse(torch.linalg.cholesky(a))


@dataclass
class RowSolve:
    """Result of :func:`reconstruct_rows`: the weights and the relative calibration errors."""

    weights: torch.Tensor     # [Cout, d], float64, zero off the mask
    error_zeroed: float       # ||X_p (w*m) - X_d w||^2 / ||X_d w||^2  (the weights only zeroed)
    error_reconstructed: float  # the same for the reconstructed weights
    damping: float


def output_error(w_new: torch.Tensor, w: torch.Tensor, h: torch.Tensor, c: torch.Tensor, dd: torch.Tensor) -> float:
    """sum over rows of ||X_p w_new_i - X_d w_i||^2 / n  =  tr(W' H W'^T) - 2 tr(W' C W^T) + tr(W D W^T)."""
    return float(((w_new @ h) * w_new).sum() - 2 * ((w_new @ c) * w).sum() + ((w @ dd) * w).sum())


def reconstruct_rows(w: torch.Tensor, mask: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None,
                     dd: torch.Tensor | None = None, alpha: float = 0.01) -> RowSolve:
    """Exact fixed-mask reconstruction of every row of ``w`` [Cout, d] (module docstring formula).

    ``mask`` [Cout, d] bool (True = kept); ``h``, ``c``, ``dd`` the moments of :class:`LayerStatistics`
    (``c = dd = h`` for ``target: dense_weights``). Rows with an empty kept set stay zero.
    """
    if w.ndim != 2 or mask.shape != w.shape or mask.dtype != torch.bool:
        raise ValueError(f"w {tuple(w.shape)} / mask {mask.dtype} {tuple(mask.shape)}: expected a [Cout, d] "
                         f"weight and a bool mask of the same shape")
    c = h if c is None else c
    dd = h if dd is None else dd
    w64, mask = w.detach().to(torch.float64).cpu(), mask.cpu()
    damp = damping_value(h, alpha)
    if not damp > 0:
        raise ReconstructionError(f"the calibration inputs are all zero (mean diag H = {damp / alpha:g})")
    eye = torch.eye(h.shape[0], dtype=torch.float64)
    hd = h + damp * eye
    b = w64 @ (c + damp * eye).T               # [Cout, d]
    h_inv = _cholesky_inverse(hd)
    w_star = b @ h_inv                          # unconstrained optimum of every row
    out = torch.zeros_like(w64)
    for i in range(w64.shape[0]):
        keep = mask[i]
        n_keep = int(keep.sum())
        if n_keep == 0:
            continue
        if n_keep == keep.numel():
            out[i] = w_star[i]
            continue
        if n_keep <= keep.numel() - n_keep:
            s = keep.nonzero().squeeze(1)
            out[i, s] = torch.cholesky_solve(b[i, s].unsqueeze(1), torch.linalg.cholesky(hd[s][:, s])).squeeze(1)
        else:
            p = (~keep).nonzero().squeeze(1)
            hinv_pp = h_inv[p][:, p]
            coef = torch.cholesky_solve(w_star[i, p].unsqueeze(1), torch.linalg.cholesky(hinv_pp)).squeeze(1)
            row = w_star[i] - coef @ h_inv[p]
            row[p] = 0.0
            out[i] = row
    ref = float(((w64 @ dd) * w64).sum())
    scale = ref if ref > 0 else 1.0
    zeroed = w64 * mask
    return RowSolve(out, output_error(zeroed, w64, h, c, dd) / scale, output_error(out, w64, h, c, dd) / scale, damp)


def check_rank(name: str, n: int, d: int) -> None:
    """Refuse statistics from fewer samples than the layer has inputs (H would be rank-deficient)."""
    if n < d:
        raise ReconstructionError(f"layer {name}: {n} calibration samples for {d} inputs per output site, "
                                  f"expected at least {d}")
