"""Streaming Fisher distortion curves delta_l(k) (METHOD.md sections 3-5).

Accumulate-then-finalize: each probe gradient g = d sigma / dW (one frame, one probe) updates, per layer,
the sums over samples of P(m_k)^2 at the K + 1 checkpoints, in O(|W|) time; per-sample gradients are
never stored. With dW(k) = -W on the first m_k weights of the order pi,

    P(m) = sum_{t <= m} (g * W)[pi_t] = -g^T dW,     Q(m) = sum_{t <= m} W[pi_t]^2 = ||dW||^2,
    delta(k) = mean_samples P(m_k)^2 + kappa * Q(m_k) = dW^T (G + kappa I) dW,   G = E[g g^T].

:class:`PerturbationCurveAccumulator` is the same estimate for arbitrary given perturbations dW(k) at a few
coarse levels — the reconstructed ones of METHOD §11.3 — with P = g^T dW(k) and Q = ||dW(k)||^2.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from .levels import level_counts, monotone_envelope
from .ranking import check_order

FORMS = ("gauss_newton", "squared")
DAMPING_MODES = ("absolute", "relative")


def _prefix_at(values: torch.Tensor, checkpoints: torch.Tensor) -> torch.Tensor:
    """sum(values[:m]) for every m in checkpoints (float64, 0 for m = 0)."""
    prefix = torch.zeros(values.numel() + 1, dtype=torch.float64, device=values.device)
    torch.cumsum(values, dim=0, out=prefix[1:])
    return prefix[checkpoints]


def _check_grads(grads: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]) -> None:
    if set(grads) != set(shapes):
        raise ValueError(f"gradient names {sorted(grads)}: expected the layer names {sorted(shapes)}")
    for name, shape in shapes.items():
        if grads[name].shape != shape:
            raise ValueError(f"gradient {name!r} shape {tuple(grads[name].shape)}: expected {tuple(shape)}")


def _check_damping(damping: float, damping_mode: str) -> None:
    if damping_mode not in DAMPING_MODES:
        raise ValueError(f"damping_mode={damping_mode!r}: expected one of {DAMPING_MODES}")
    if not damping >= 0.0:
        raise ValueError(f"damping={damping!r}: expected >= 0")


def _kappa(damping: float, damping_mode: str, g2_sum: torch.Tensor, num_samples: int, numel: int) -> float:
    """kappa = damping (absolute) or damping * mean_i E[g_i^2] (relative, METHOD §4)."""
    if damping_mode == "absolute":
        return damping
    if num_samples == 0:
        raise ValueError("num_samples=0: expected at least one add() before finalising")
    return damping * float(g2_sum) / (num_samples * numel)


class FisherCurveAccumulator:
    """Per-layer sums of P(m_k)^2 over (frame, probe) samples; finalised into delta_l(k), k = 0..K (§5).

    damping_mode absolute: kappa = damping; relative: kappa = damping * mean diag(G_l), with diag(G_l)
    estimated as the sample mean of g^2 (METHOD §4).
    """

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        orders: Mapping[str, torch.Tensor],
        num_levels: int,
        damping: float = 1e-7,
        damping_mode: str = "absolute",
    ) -> None:
        if set(weights) != set(orders) or not weights:
            raise ValueError(f"order names {sorted(orders)}: expected the (non-empty) weight names {sorted(weights)}")
        _check_damping(damping, damping_mode)
        self.num_levels = num_levels
        self.damping = float(damping)
        self.damping_mode = damping_mode
        self.num_samples = 0
        self._shapes: dict[str, torch.Size] = {}
        self._orders: dict[str, torch.Tensor] = {}
        self._sorted_w: dict[str, torch.Tensor] = {}
        self._checkpoints: dict[str, torch.Tensor] = {}
        self._q: dict[str, np.ndarray] = {}
        self._p2_sum: dict[str, torch.Tensor] = {}
        self._g2_sum: dict[str, torch.Tensor] = {}
        for name, w in weights.items():
            order = orders[name]
            check_order(order, w.numel(), f"order {name!r}")
            flat = w.detach().reshape(-1).to(torch.float64)
            checkpoints = torch.as_tensor(level_counts(num_levels, w.numel()), device=w.device)
            self._shapes[name] = w.shape
            self._orders[name] = order.to(w.device)
            self._sorted_w[name] = flat[self._orders[name]]
            self._checkpoints[name] = checkpoints
            self._q[name] = _prefix_at(self._sorted_w[name] ** 2, checkpoints).cpu().numpy()
            self._p2_sum[name] = torch.zeros(num_levels + 1, dtype=torch.float64, device=w.device)
            self._g2_sum[name] = torch.zeros((), dtype=torch.float64, device=w.device)

    @torch.no_grad()
    def add(self, grads: Mapping[str, torch.Tensor]) -> None:
        """Add one (frame, probe) sample: sum += P(m_k)^2 with P(m) = cumsum((g * W)[pi])[m] (METHOD §5)."""
        _check_grads(grads, self._shapes)
        for name, order in self._orders.items():
            g = grads[name].detach().reshape(-1).to(device=order.device, dtype=torch.float64)
            p = _prefix_at(g[order] * self._sorted_w[name], self._checkpoints[name])
            self._p2_sum[name] += p * p
            self._g2_sum[name] += torch.dot(g, g)
        self.num_samples += 1

    def kappa(self, name: str) -> float:
        """Damping kappa of layer `name`: absolute, or damping * mean_i E[g_i^2] (relative)."""
        return _kappa(self.damping, self.damping_mode, self._g2_sum[name], self.num_samples,
                      self._sorted_w[name].numel())

    def curves(self, form: str = "gauss_newton", monotone: bool = True) -> dict[str, np.ndarray]:
        """name -> float64 array of length K + 1 (METHOD §3, §5).

        gauss_newton: delta(k) = mean P(m_k)^2 + kappa * Q(m_k) = dW^T (G + kappa I) dW;
        squared:      delta(k)^2, the per-layer term read as a squared quadratic form;
        monotone:     cumulative maximum over k.
        """
        if form not in FORMS:
            raise ValueError(f"form={form!r}: expected one of {FORMS}")
        self._require_samples()
        out = {}
        for name, p2 in self._p2_sum.items():
            curve = p2.cpu().numpy() / self.num_samples + self.kappa(name) * self._q[name]
            if form == "squared":
                curve = curve**2
            out[name] = monotone_envelope(curve) if monotone else curve
        return out

    def _require_samples(self) -> None:
        if self.num_samples == 0:
            raise ValueError("num_samples=0: expected at least one add() before finalising")


class PerturbationCurveAccumulator:
    """delta_l(k) of given perturbations dW_l at coarse levels, on the K + 1 levels (METHOD §11.3).

    ``perturbations[name]`` is a ``(C, |W|)`` matrix whose row j is dW_l(k_j) (flattened canonical view) at
    the pruned counts ``coarse_counts[name]`` (increasing, starting at 0 with a zero row). Each sample adds
    (dW g)^2 in O(C |W|); finalising gives delta(k_j) = mean (g . dW(k_j))^2 + kappa ||dW(k_j)||^2, and the
    levels in between are interpolated linearly in sqrt(delta) (delta is quadratic in the perturbation's
    scale, so sqrt(delta) grows about linearly with the pruned count), then the envelope as in §5.
    kappa as in :class:`FisherCurveAccumulator`.
    """

    def __init__(self, perturbations: Mapping[str, torch.Tensor], coarse_counts: Mapping[str, np.ndarray],
                 num_levels: int, damping: float = 1e-7, damping_mode: str = "absolute") -> None:
        if set(perturbations) != set(coarse_counts) or not perturbations:
            raise ValueError(f"coarse count names {sorted(coarse_counts)}: expected the (non-empty) perturbation "
                             f"names {sorted(perturbations)}")
        _check_damping(damping, damping_mode)
        self.num_levels, self.damping, self.damping_mode = num_levels, float(damping), damping_mode
        self.num_samples = 0
        self._dw = {n: p.detach().to(torch.float64) for n, p in perturbations.items()}
        self._counts = {n: np.asarray(c, dtype=np.int64) for n, c in coarse_counts.items()}
        for name, dw in self._dw.items():
            counts = self._counts[name]
            if dw.ndim != 2 or dw.shape[0] != counts.size or counts[0] != 0 or np.any(np.diff(counts) <= 0):
                raise ValueError(f"perturbations {name!r} {tuple(dw.shape)} with counts {counts.tolist()}: expected "
                                 f"one row per strictly increasing count, starting at 0")
        self._q = {n: (dw * dw).sum(1).cpu().numpy() for n, dw in self._dw.items()}
        self._p2_sum = {n: torch.zeros(dw.shape[0], dtype=torch.float64, device=dw.device) for n, dw in self._dw.items()}
        self._g2_sum = {n: torch.zeros((), dtype=torch.float64, device=dw.device) for n, dw in self._dw.items()}

    @torch.no_grad()
    def add(self, grads: Mapping[str, torch.Tensor]) -> None:
        """Add one (frame, probe) sample: sum_j += (g . dW(k_j))^2."""
        if set(grads) != set(self._dw):
            raise ValueError(f"gradient names {sorted(grads)}: expected the layer names {sorted(self._dw)}")
        for name, dw in self._dw.items():
            g = grads[name].detach().reshape(-1).to(device=dw.device, dtype=torch.float64)
            if g.numel() != dw.shape[1]:
                raise ValueError(f"gradient {name!r} has {g.numel()} elements: expected {dw.shape[1]}")
            p = dw @ g
            self._p2_sum[name] += p * p
            self._g2_sum[name] += torch.dot(g, g)
        self.num_samples += 1

    def kappa(self, name: str) -> float:
        """Damping kappa of layer `name`: absolute, or damping * mean_i E[g_i^2] (relative)."""
        return _kappa(self.damping, self.damping_mode, self._g2_sum[name], self.num_samples, self._dw[name].shape[1])

    def coarse_curves(self) -> dict[str, np.ndarray]:
        """name -> delta(k_j) at the coarse counts (float64, not interpolated, not monotone)."""
        if self.num_samples == 0:
            raise ValueError("num_samples=0: expected at least one add() before finalising")
        return {n: p2.cpu().numpy() / self.num_samples + self.kappa(n) * self._q[n] for n, p2 in self._p2_sum.items()}

    def curves(self, form: str = "gauss_newton", monotone: bool = True) -> dict[str, np.ndarray]:
        """name -> float64 array of length K + 1: the coarse delta interpolated to m_0..m_K (class docstring)."""
        if form not in FORMS:
            raise ValueError(f"form={form!r}: expected one of {FORMS}")
        out = {}
        for name, coarse in self.coarse_curves().items():
            full = level_counts(self.num_levels, self._dw[name].shape[1])
            curve = np.interp(full, self._counts[name], np.sqrt(np.maximum(coarse, 0.0))) ** 2
            if form == "squared":
                curve = curve**2
            out[name] = monotone_envelope(curve) if monotone else curve
        return out


class GradientMeanAccumulator:
    """Running mean of gradients per layer: g_mean for the Taylor ranking |w * g_mean| (METHOD §5, §6).

    Feed it gradients whose mean is informative (e.g. the mean_square probe): random-probe gradients
    have zero mean in expectation.
    """

    def __init__(self) -> None:
        self.num_samples = 0
        self._sums: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def add(self, grads: Mapping[str, torch.Tensor]) -> None:
        """sum_l += g_l for one sample (float64 sums)."""
        if not self._sums:
            self._sums = {name: torch.zeros_like(g, dtype=torch.float64) for name, g in grads.items()}
        _check_grads(grads, {name: s.shape for name, s in self._sums.items()})
        for name, g in grads.items():
            self._sums[name] += g.detach().to(torch.float64)
        self.num_samples += 1

    def mean(self) -> dict[str, torch.Tensor]:
        """name -> sum_l / num_samples (float64)."""
        if self.num_samples == 0:
            raise ValueError("num_samples=0: expected at least one add() before taking the mean")
        return {name: s / self.num_samples for name, s in self._sums.items()}
