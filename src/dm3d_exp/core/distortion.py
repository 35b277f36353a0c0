"""Detection distortion D and the Fisher probe scalar sigma (METHOD.md sections 2 and 4).

Both are written with per-element weights a_k of every output tensor y_k:
    a_k = lambda_{group(k)} / |y_k|                       (plain means, METHOD §2)
    a_k = lambda_{group(k)} * w_k / sum(w_k)               (foreground-weighted means; extension, not in the paper)
and, with channel normalisation (extension, not in the paper), a_{k,c} divided by the dense (weighted)
variance of channel c of y_k, so that every output channel counts by its error relative to its own spread
(unit-free: log-dims, sin/cos, offsets and logits become comparable), giving
D = sum_k sum_i a_{k,i} (y_{k,i} - y~_{k,i})^2; the probe gradients satisfy E[g g^T] = J^T diag(a) J.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

GROUPS = ("loc", "conf")
PROBES = ("random", "mean_square")
NORMALIZATIONS = ("none", "channel_variance")
VAR_FLOOR_REL = 1e-6  # channel variances are floored at this fraction of the tensor's largest channel variance
DEFAULT_LAMBDAS = {"loc": 1.0, "conf": 1.0}


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def _element_weights(
    outputs: Mapping[str, torch.Tensor],
    groups: Mapping[str, str],
    lambdas: Mapping[str, float] | None,
    fg_weights: Mapping[str, torch.Tensor] | None,
    normalize: str = "none",
) -> dict[str, torch.Tensor | float]:
    """a_k for every output name, a float for plain means or a tensor broadcastable to y_k."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r}: expected one of {NORMALIZATIONS}")
    if not outputs:
        raise ValueError("outputs: expected at least one named head output")
    lambdas = DEFAULT_LAMBDAS if lambdas is None else lambdas
    if set(lambdas) != set(GROUPS) or any(not float(v) >= 0.0 for v in lambdas.values()):
        raise ValueError(f"lambdas={dict(lambdas)!r}: expected non-negative values for exactly {GROUPS}")
    fg_weights = {} if fg_weights is None else fg_weights
    unknown = set(fg_weights) - set(outputs)
    if unknown:
        raise ValueError(f"fg_weights names {sorted(unknown)}: expected names of outputs {sorted(outputs)}")
    scales: dict[str, torch.Tensor | float] = {}
    for name in sorted(outputs):
        y = outputs[name]
        group = groups.get(name)
        if group not in GROUPS:
            raise ValueError(f"output {name!r} has group {group!r}: expected one of {GROUPS}")
        if y.numel() == 0:
            raise ValueError(f"output {name!r} is empty: expected at least one element")
        lam = float(lambdas[group])
        w = None
        if name in fg_weights:
            w = fg_weights[name].detach()
            if not _broadcasts_to(w.shape, y.shape) or torch.any(w < 0):
                raise ValueError(f"fg_weights[{name!r}] shape {tuple(w.shape)}: expected non-negative, "
                                 f"broadcastable to {tuple(y.shape)}")
            total = w.expand(y.shape).sum()
            if not total > 0:
                raise ValueError(f"fg_weights[{name!r}] sums to {float(total)}: expected a positive total")
            scales[name] = lam * w / total
        else:
            scales[name] = lam / y.numel()
        if normalize == "channel_variance":
            scales[name] = scales[name] / channel_variance(y.detach(), w)
    return scales


def channel_variance(y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-channel (dim 1) variance of y over all other dims, weighted by ``weights`` (broadcastable to y)
    when given: var_c = sum_i w_i (y_ic - mu_c)^2 / sum_i w_i. Shape [1, C, 1, ...], broadcastable to y;
    floored at VAR_FLOOR_REL * max_c var_c (a constant channel must not get an infinite weight)."""
    if y.dim() < 2:
        raise ValueError(f"output shape {tuple(y.shape)}: channel normalisation expects [N, C, ...]")
    dims = [d for d in range(y.dim()) if d != 1]
    w = torch.ones_like(y) if weights is None else weights.expand(y.shape)
    total = w.sum(dim=dims, keepdim=True)
    mean = (w * y).sum(dim=dims, keepdim=True) / total
    var = (w * (y - mean) ** 2).sum(dim=dims, keepdim=True) / total
    floor = VAR_FLOOR_REL * var.max() + torch.finfo(y.dtype).tiny
    return var.clamp_min(floor)


def detection_distortion(
    dense: Mapping[str, torch.Tensor],
    pruned: Mapping[str, torch.Tensor],
    groups: Mapping[str, str],
    lambdas: Mapping[str, float] | None = None,
    fg_weights: Mapping[str, torch.Tensor] | None = None,
    normalize: str = "none",
) -> torch.Tensor:
    """D = lambda_loc * sum_{k in loc} mean((y_k - y~_k)^2) + lambda_conf * sum_{k in conf} mean(...) (METHOD §2).

    One batch; the expectation over frames is the caller's mean. With fg_weights (extension) the mean of
    tensor k is the weighted mean sum(w_k * d^2) / sum(w_k); with normalize='channel_variance' (extension)
    every channel's term is divided by the dense channel's (weighted) variance (``channel_variance``).
    """
    if set(dense) != set(pruned):
        raise ValueError(f"pruned output names {sorted(pruned)}: expected the dense names {sorted(dense)}")
    for name in dense:
        if dense[name].shape != pruned[name].shape:
            raise ValueError(f"pruned {name!r} shape {tuple(pruned[name].shape)}: expected {tuple(dense[name].shape)}")
    scales = _element_weights(dense, groups, lambdas, fg_weights, normalize)
    return sum((scales[k] * (dense[k] - pruned[k]) ** 2).sum() for k in scales)


def probe_scalar(
    outputs: Mapping[str, torch.Tensor],
    groups: Mapping[str, str],
    lambdas: Mapping[str, float] | None = None,
    kind: str = "random",
    generator: torch.Generator | None = None,
    fg_weights: Mapping[str, torch.Tensor] | None = None,
    normalize: str = "none",
) -> torch.Tensor:
    """Scalar whose weight gradient g feeds the Fisher curves (METHOD §4).

    random:      sigma = sum_k <sqrt(a_k) * v_k, y_k>, v_k ~ N(0, I) drawn from `generator` in sorted name
                 order; with a_k = lambda_k / |y_k| this is sum_k sqrt(lambda_k / |y_k|) <v_k, y_k> and
                 E[g g^T] = J^T diag(a) J.
    mean_square: sigma = sum_k sum_i a_{k,i} y_{k,i}^2 = sum_k lambda_k mean(y_k^2) (author-faithful variant).
    ``outputs`` are the dense model's, so fg_weights / normalize give the same a_k as detection_distortion.
    """
    if kind not in PROBES:
        raise ValueError(f"kind={kind!r}: expected one of {PROBES}")
    scales = _element_weights(outputs, groups, lambdas, fg_weights, normalize)
    if kind == "mean_square":
        return sum((scales[k] * outputs[k] ** 2).sum() for k in scales)
    total = 0.0
    for k, a in scales.items():
        y = outputs[k]
        v = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        root = a**0.5 if isinstance(a, float) else a.sqrt()
        total = total + (root * v * y).sum()
    return total


def foreground_weights(class_logits: torch.Tensor) -> torch.Tensor:
    """Extension (not in the paper): per-position weight max_c sigmoid(logits[:, c]) of the dense model,
    shape [B, 1, *positions], to pass as fg_weights for outputs at the same positions (METHOD §2):
    a CenterPoint heatmap, an anchor head's cls_score (max over anchors and classes), RoI scores."""
    if class_logits.dim() < 2:
        raise ValueError(f"class logits shape {tuple(class_logits.shape)}: expected [B, C, *positions]")
    return class_logits.detach().sigmoid().amax(dim=1, keepdim=True)
