"""Normalisation statistics after pruning (METHOD.md §11.2; beyond the paper): BN re-estimation through
the training pipeline, and ``statcorr`` (the pruned model's BN outputs matched to the dense model's)."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..core.statcorr import ChannelMoments, matched_running_stats, standardised_shift, variance_matchable
from .heads import head_outputs


def batchnorm_modules(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm (1d/2d/3d, SyncBN) of the model that tracks running statistics."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[tuple],
                         progress: Callable[[int], None] | None = None) -> int:
    """Reset every BN's running mean/var and re-estimate them as the cumulative average over ``batches``
    (BN in train mode, everything else in eval mode, no gradient); the model is left in eval mode.

    Feed it the distribution the statistics were trained on (training pipeline and batch size, §11.2).
    Returns the number of batches seen; with none the statistics are left as they were.
    """
    bns = batchnorm_modules(model)
    saved = {n: (m.momentum, m.running_mean.clone(), m.running_var.clone()) for n, m in bns.items()}
    for m in bns.values():
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.eval()
    for m in bns.values():
        m.train()
    seen = 0
    try:
        for inputs, samples in batches:
            head_outputs(model, inputs, samples)
            seen += 1
            if progress:
                progress(1)
    finally:
        model.eval()
        for n, m in bns.items():
            m.momentum = saved[n][0]
            if seen == 0:
                m.running_mean.copy_(saved[n][1])
                m.running_var.copy_(saved[n][2])
    return seen


class _GroupDone(Exception):
    """Raised by a hook once every BN of the group has seen all its calls of the batch."""


def _moments(model: nn.Module, bns: Mapping[str, nn.Module], names: Sequence[str], batches: Sequence,
             calls: list[dict[str, int]] | None = None) -> tuple[dict[str, ChannelMoments], list[dict[str, int]]]:
    """Per-channel input moments of the BNs ``names`` over ``batches``. With ``calls`` (per batch: how many
    times each BN runs, from an earlier full pass) the forward stops once the group is complete."""
    moments = {n: ChannelMoments(bns[n].num_features) for n in names}
    seen: list[dict[str, int]] = []

    def hook(name):
        def pre(mod, inputs):
            moments[name].add(inputs[0])
            count[name] = count.get(name, 0) + 1
            if calls is not None and all(count.get(n, 0) >= calls[b].get(n, 0) for n in names):
                raise _GroupDone

        return pre

    handles = [bns[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        for b, (inputs, samples) in enumerate(batches):
            count: dict[str, int] = {}
            try:
                head_outputs(model, inputs, samples)
            except _GroupDone:
                pass
            seen.append(count)
    finally:
        for h in handles:
            h.remove()
    return moments, seen


@torch.no_grad()
def correct_statistics(model: nn.Module, dense: nn.Module, batches: Sequence, bns_per_pass: int = 1,
                       progress: Callable[[int], None] | None = None) -> dict[str, dict]:
    """``statcorr`` (METHOD.md §11.2): set every BN's running mean/var so that, on ``batches``, the pruned
    ``model``'s BN outputs have the per-channel mean and variance of the ``dense`` model's
    (:func:`dm3d_exp.core.statcorr.matched_running_stats`). Sequential in forward order, ``bns_per_pass``
    BNs per calibration pass, each measured with the earlier ones already corrected. Both models are left
    in eval mode; BNs that never run are left as they are. Returns a record per corrected BN: channels,
    channels matched by mean only, and the mean |standardised shift| of its input before correction.
    """
    model.eval()
    dense.eval()
    bns, dense_bns = batchnorm_modules(model), batchnorm_modules(dense)
    if bns.keys() != dense_bns.keys():
        raise ValueError("statcorr: the pruned and the dense model have different BatchNorms")
    dense_moments, calls = _moments(dense, dense_bns, list(dense_bns), batches)
    order: list[str] = []
    for per_batch in calls:  # forward order: hooks fire in it, dicts keep insertion order
        order += [n for n in per_batch if n not in order]
    records: dict[str, dict] = {}
    for start in range(0, len(order), bns_per_pass):
        group = order[start:start + bns_per_pass]
        pruned_moments, _ = _moments(model, bns, group, batches, calls)
        for name in group:
            m, d, p = bns[name], dense_moments[name], pruned_moments[name]
            new_mean, new_var = matched_running_stats(m.running_mean, m.running_var, m.eps, d, p)
            records[name] = {"channels": m.num_features, "mean_only": int((~variance_matchable(d, p)).sum()),
                             "shift_before": standardised_shift(d, p)}
            m.running_mean.copy_(new_mean)
            m.running_var.copy_(new_var)
            if progress:
                progress(1)
    return records
