"""Intra-layer pruning orders and the nested masks they define (METHOD.md section 6).

An order is a LongTensor permutation of the flattened canonical weight (row-major over [K, Cout, Cin]),
pruned-first: the first m entries are the weights pruned at any level with m_k = m.
"""

from __future__ import annotations

import torch


def _check_weight(w: torch.Tensor) -> None:
    if not isinstance(w, torch.Tensor) or w.dim() != 3 or w.numel() == 0:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"weight shape {shape}: expected a non-empty canonical [K, Cout, Cin] tensor")


def check_order(order: torch.Tensor, numel: int, name: str = "order") -> None:
    """Raise ValueError unless `order` is a 1-D integer permutation of range(numel)."""
    shaped = order.dim() == 1 and order.numel() == numel > 0 and not order.is_floating_point()
    if not (shaped and int(order.min()) >= 0 and bool((torch.bincount(order, minlength=numel) == 1).all())):
        raise ValueError(f"{name} of shape {tuple(order.shape)}: expected a permutation of range({numel})")


def order_by_scores(*keys: torch.Tensor) -> torch.Tensor:
    """Permutation sorting flattened weights ascending by keys[0], ties by keys[1], ..., then by flat index.

    Lexicographic order via successive stable sorts, least significant key first; deterministic.
    """
    if not keys:
        raise ValueError("keys: expected at least one score tensor")
    flat = [k.detach().reshape(-1) for k in keys]
    if any(f.numel() != flat[0].numel() for f in flat):
        raise ValueError(f"score sizes {[f.numel() for f in flat]}: expected equal sizes")
    order = torch.arange(flat[0].numel(), device=flat[0].device)
    for key in reversed(flat):
        order = order[torch.sort(key[order], stable=True).indices]
    return order


def magnitude_order(w: torch.Tensor) -> torch.Tensor:
    """Pruned-first order by |w| ascending, ties by flat index (METHOD §6, `ranking: magnitude`)."""
    _check_weight(w)
    return order_by_scores(w.abs())


def taylor_order(w: torch.Tensor, g_mean: torch.Tensor) -> torch.Tensor:
    """Pruned-first order by the first-order score |w * g_mean| ascending, ties by |w|, then flat index
    (METHOD §6, `ranking: taylor`)."""
    _check_weight(w)
    if g_mean.shape != w.shape:
        raise ValueError(f"g_mean shape {tuple(g_mean.shape)}: expected the weight shape {tuple(w.shape)}")
    return order_by_scores((w * g_mean).abs(), w.abs())


def mask_from_order(order: torch.Tensor, shape: tuple[int, ...], m: int) -> torch.Tensor:
    """Boolean keep-mask of `shape` with the first m weights of `order` pruned (False); nested in m."""
    numel = 1
    for d in shape:
        numel *= int(d)
    check_order(order, numel)
    if int(m) != m or not 0 <= m <= numel:
        raise ValueError(f"m={m!r}: expected an integer number of pruned weights in [0, {numel}]")
    keep = torch.ones(numel, dtype=torch.bool, device=order.device)
    keep[order[: int(m)]] = False
    return keep.reshape(shape)


@torch.no_grad()
def apply_mask_(w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """w <- w * mask in place (zeros baked into the tensor, and into the parameter when w is a canonical
    [K, Cout, Cin] view of it, METHOD.md §7)."""
    if mask.shape != w.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask {mask.dtype} {tuple(mask.shape)}: expected a bool mask of shape {tuple(w.shape)}")
    return w.masked_fill_(~mask.to(w.device), 0)
