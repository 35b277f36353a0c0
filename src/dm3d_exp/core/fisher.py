"""Streaming Fisher distortion curves delta_l(k) (METHOD.md sections 3-5).

Accumulate-then-finalize: each probe gradient g = d sigma / dW (one frame, one probe) updates, per layer,
the sums over samples of P(m_k)^2 at the K + 1 checkpoints, in O(|W|) time; per-sample gradients are
never stored. With dW(k) = -W on the first m_k weights of the order pi,

    P(m) = sum_{t <= m} (g * W)[pi_t] = -g^T dW,     Q(m) = sum_{t <= m} W[pi_t]^2 = ||dW||^2,
    delta(k) = mean_samples P(m_k)^2 + kappa * Q(m_k) = dW^T (G + kappa I) dW,   G = E[g g^T].
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
        if damping_mode not in DAMPING_MODES:
            raise ValueError(f"damping_mode={damping_mode!r}: expected one of {DAMPING_MODES}")
        if not damping >= 0.0:
            raise ValueError(f"damping={damping!r}: expected >= 0")
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
        if self.damping_mode == "absolute":
            return self.damping
        self._require_samples()
        numel = self._sorted_w[name].numel()
        return self.damping * float(self._g2_sum[name]) / (self.num_samples * numel)

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
