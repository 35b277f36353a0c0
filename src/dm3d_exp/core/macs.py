"""MACs accounting for canonical [K, Cout, Cin] layers (METHOD.md section 7).

pairs[j] = n_j, the number of (input, output) pairs of kernel tap j (Conv2d: H_out*W_out for every tap;
ConvTranspose2d: H_in*W_in; Linear: rows; spconv: rulebook pair counts averaged over reference frames).
FLOPs = 2 * MACs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .levels import level_counts
from .ranking import check_order

MODES = ("tap_aware", "density")
DENOMINATORS = ("whole", "prunable")


@dataclass(frozen=True)
class LayerCost:
    """MACs geometry of one prunable layer.

    kernel_size: the original kernel dims (e.g. (3, 3, 3)), used by ERK; their product must equal K.
    Defaults to (K,) for K > 1 and () for K == 1.
    """

    name: str
    pairs: np.ndarray
    cout: int
    cin: int
    kernel_size: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        pairs = np.asarray(self.pairs, dtype=np.float64)
        if pairs.ndim != 1 or pairs.size == 0 or not np.all(np.isfinite(pairs)) or np.any(pairs < 0):
            raise ValueError(f"{self.name}: pairs {self.pairs!r}: expected a non-empty 1-D vector of finite counts")
        for field in ("cout", "cin"):
            value = getattr(self, field)
            if int(value) != value or value < 1:
                raise ValueError(f"{self.name}: {field}={value!r}: expected an integer >= 1")
        kernel = self.kernel_size
        if kernel is None:
            kernel = (pairs.size,) if pairs.size > 1 else ()
        kernel = tuple(int(k) for k in kernel)
        if int(np.prod(kernel, dtype=np.int64)) != pairs.size:
            raise ValueError(f"{self.name}: kernel_size {kernel}: expected dims whose product is K={pairs.size}")
        object.__setattr__(self, "pairs", pairs)
        object.__setattr__(self, "cout", int(self.cout))
        object.__setattr__(self, "cin", int(self.cin))
        object.__setattr__(self, "kernel_size", kernel)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical weight shape [K, Cout, Cin]."""
        return (self.pairs.size, self.cout, self.cin)

    @property
    def numel(self) -> int:
        """Number of weights K * Cout * Cin."""
        return self.pairs.size * self.cout * self.cin

    @property
    def dense_macs(self) -> float:
        """Dense MACs = sum_j n_j * Cin * Cout (METHOD §7)."""
        return float(self.pairs.sum() * self.cout * self.cin)

    def pruned_macs(self, mask: torch.Tensor | np.ndarray, mode: str = "tap_aware") -> float:
        """MACs under a keep-mask: tap_aware = sum_j n_j * nnz(mask[j]); density = dense * nnz / numel (§7)."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: expected one of {MODES}")
        if tuple(mask.shape) != self.shape:
            raise ValueError(f"{self.name}: mask shape {tuple(mask.shape)}: expected {self.shape}")
        kept = np.asarray(torch.as_tensor(mask).reshape(self.shape[0], -1).sum(dim=1).cpu(), dtype=np.float64)
        if mode == "density":
            return self.dense_macs * float(kept.sum()) / self.numel
        return float(self.pairs @ kept)


def prefix_macs(cost: LayerCost, order: torch.Tensor) -> np.ndarray:
    """Tap-aware MACs left after pruning the first m weights of `order`, for m = 0..numel.

    Pruning flat index t removes n_{tap(t)} MACs with tap(t) = t // (Cout * Cin); entry m is the suffix
    sum over order[m:], so entry numel is exactly 0.
    """
    check_order(order, cost.numel, f"{cost.name}: order")
    taps = (order.cpu().numpy() // (cost.cout * cost.cin)).astype(np.int64)
    removed = cost.pairs[taps]
    remaining = np.zeros(cost.numel + 1, dtype=np.float64)
    remaining[:-1] = np.cumsum(removed[::-1])[::-1]
    return remaining


def mode_prefix_macs(cost: LayerCost, order: torch.Tensor, mode: str = "tap_aware") -> np.ndarray:
    """MACs left after pruning the first m weights of `order`, m = 0..numel, in a MACs mode (METHOD §7):
    tap_aware: :func:`prefix_macs`; density: dense_macs * (1 - m / numel)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {MODES}")
    if mode == "density":
        return cost.dense_macs * (1.0 - np.arange(cost.numel + 1, dtype=np.float64) / cost.numel)
    return prefix_macs(cost, order)


def level_costs(cost: LayerCost, order: torch.Tensor, num_levels: int, mode: str = "tap_aware") -> np.ndarray:
    """MACs of the layer at levels k = 0..K when the first m_k = (k * numel) // K weights of `order` are pruned:
    :func:`mode_prefix_macs` at m_k (METHOD §5, §7)."""
    return mode_prefix_macs(cost, order, mode)[level_counts(num_levels, cost.numel)]


@dataclass(frozen=True)
class MacsSummary:
    """Model MACs with both denominators of METHOD §7 ("prunable layers" and "whole model")."""

    prunable_dense: float
    prunable_pruned: float
    non_prunable: float

    @property
    def whole_dense(self) -> float:
        """Dense MACs of the whole model: prunable + non-prunable."""
        return self.prunable_dense + self.non_prunable

    @property
    def whole_pruned(self) -> float:
        """Pruned MACs of the whole model: pruned prunable + non-prunable."""
        return self.prunable_pruned + self.non_prunable

    @property
    def ratio_whole(self) -> float:
        """Pruned / dense MACs of the whole model (the FLOPs ratio the target applies to)."""
        return self.whole_pruned / self.whole_dense

    @property
    def ratio_prunable(self) -> float:
        """Pruned / dense MACs of the prunable layers only."""
        return self.prunable_pruned / self.prunable_dense

    def as_dict(self) -> dict[str, float]:
        """Explicitly named MACs and FLOPs (= 2 * MACs) for both denominators."""
        out = {
            "macs_dense_prunable": self.prunable_dense,
            "macs_pruned_prunable": self.prunable_pruned,
            "macs_dense_whole": self.whole_dense,
            "macs_pruned_whole": self.whole_pruned,
        }
        out.update({"flops" + key[4:]: 2.0 * value for key, value in out.items()})
        out.update({"flops_ratio_whole": self.ratio_whole, "flops_ratio_prunable": self.ratio_prunable})
        return out


def summarize_macs(costs: Sequence[LayerCost], pruned_macs: Sequence[float], non_prunable_macs: float) -> MacsSummary:
    """Totals: prunable dense = sum_l dense_l, prunable pruned = sum_l pruned_l, plus non-prunable MACs."""
    if len(costs) != len(pruned_macs):
        raise ValueError(f"{len(pruned_macs)} pruned MACs values: expected one per layer ({len(costs)})")
    if non_prunable_macs < 0:
        raise ValueError(f"non_prunable_macs={non_prunable_macs!r}: expected >= 0")
    return MacsSummary(
        prunable_dense=float(sum(c.dense_macs for c in costs)),
        prunable_pruned=float(sum(pruned_macs)),
        non_prunable=float(non_prunable_macs),
    )


def prunable_budget(
    costs: Sequence[LayerCost], non_prunable_macs: float, target: float, denominator: str = "whole"
) -> float:
    """MACs allowed for the prunable layers under a FLOPs target (METHOD §1, §7).

    whole: target * (prunable_dense + non_prunable) - non_prunable; prunable: target * prunable_dense.
    """
    if denominator not in DENOMINATORS:
        raise ValueError(f"denominator={denominator!r}: expected one of {DENOMINATORS}")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target={target!r}: expected a FLOPs fraction in (0, 1]")
    summary = summarize_macs(costs, [0.0] * len(costs), non_prunable_macs)
    if denominator == "prunable":
        return target * summary.prunable_dense
    budget = target * summary.whole_dense - summary.non_prunable
    if budget < 0:
        share = summary.non_prunable / summary.whole_dense
        raise ValueError(f"target={target!r}: expected at least the non-prunable MACs share {share:.6g}")
    return budget
