"""Dense-matching statistics correction of a pruned model's BatchNorms (METHOD.md §11.2 ``statcorr``;
beyond the paper).

A BatchNorm in eval mode computes  y = gamma (x - m) / sqrt(v + eps) + beta  per channel. If the dense
model's BN input has per-channel mean/variance (mu_d, s_d^2) and the pruned model's (mu_p, s_p^2), the
running statistics

    s = s_p / s_d,   m' = mu_p - (mu_d - m) s,   v' = (v + eps) s^2 - eps

make the pruned model's BN output have exactly the dense model's per-channel mean and variance
(mean: gamma (mu_d - m) / sqrt(v + eps) + beta; std: |gamma| s_d / sqrt(v + eps)). No weight changes.
A channel whose pruned (or dense) input is constant cannot have its variance matched: only its mean is
(s = 1). Where ``(v + eps) s^2 < eps`` the variance is clamped at 0 (the output std then stays above the
dense one) and ``m'`` uses the achieved scale sqrt((v' + eps) / (v + eps)) so that the mean still matches.
"""
from __future__ import annotations

import torch


class ChannelMoments:
    """Streamed per-channel mean and (population) variance of a BN's input, float64 accumulators.

    ``add(x)`` with x of shape [N, C] (BatchNorm1d, spconv features) or [B, C, *spatial].
    """

    def __init__(self, channels: int):
        self.channels = int(channels)
        self.n = 0
        self.sum = torch.zeros(self.channels, dtype=torch.float64)
        self.sumsq = torch.zeros(self.channels, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(f"BN input of shape {tuple(x.shape)}: expected [N, {self.channels}, ...]")
        flat = x.detach().transpose(0, 1).reshape(self.channels, -1).to(torch.float64).cpu()
        self.sum += flat.sum(dim=1)
        self.sumsq += (flat * flat).sum(dim=1)
        self.n += int(flat.shape[1])

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.n, 1)

    @property
    def var(self) -> torch.Tensor:
        return (self.sumsq / max(self.n, 1) - self.mean ** 2).clamp_min(0.0)


def variance_matchable(dense: ChannelMoments, pruned: ChannelMoments, rel_tol: float = 1e-6) -> torch.Tensor:
    """Channels whose input varies on both sides (std > rel_tol of the other side's std, and > 0): only
    these have their variance matched; the others keep it and match the mean only."""
    sd, sp = dense.var.sqrt(), pruned.var.sqrt()
    return (sd > 0) & (sp > rel_tol * sd) & (sd > rel_tol * sp)


def standardised_shift(dense: ChannelMoments, pruned: ChannelMoments) -> float:
    """Mean over variance-matchable channels of |mu_p - mu_d| / s_d: how far the pruned input has drifted."""
    ok = variance_matchable(dense, pruned)
    if not bool(ok.any()):
        return 0.0
    return float(((pruned.mean - dense.mean).abs()[ok] / dense.var.sqrt()[ok]).mean())


def matched_running_stats(running_mean: torch.Tensor, running_var: torch.Tensor, eps: float,
                          dense: ChannelMoments, pruned: ChannelMoments) -> tuple[torch.Tensor, torch.Tensor]:
    """The running mean/var (module docstring formula) that give the pruned BN input the dense BN output's
    per-channel mean and variance; channels not :func:`variance_matchable` match the mean only (s = 1).
    Returned in the running stats' dtype and device."""
    if dense.n == 0 or pruned.n == 0:
        raise ValueError(f"statcorr needs moments of both models: dense saw {dense.n}, pruned {pruned.n} values")
    m = running_mean.detach().to(torch.float64).cpu()
    v = running_var.detach().to(torch.float64).cpu()
    ok = variance_matchable(dense, pruned)
    s = torch.where(ok, pruned.var.sqrt() / torch.where(ok, dense.var.sqrt(), torch.ones_like(m)), torch.ones_like(m))
    new_v = ((v + eps) * s * s - eps).clamp_min(0.0)
    new_m = pruned.mean - (dense.mean - m) * ((new_v + eps) / (v + eps)).sqrt()  # = s unless clamped
    return new_m.to(running_mean), new_v.to(running_var)
