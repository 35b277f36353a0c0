import numpy as np
import pytest
import torch

from core_tiny_model import GROUPS, element_weights, exact_accumulator, jacobians, linear_heads
from dm3d_exp.core.distortion import detection_distortion
from dm3d_exp.core.levels import level_counts
from dm3d_exp.core.measured import measured_curves
from dm3d_exp.core.ranking import magnitude_order

LAMBDAS = {"loc": 1.0, "conf": 3.0}


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    weights = {"reg": torch.randn(1, 4, 6, generator=g, dtype=torch.float64),
               "cls": torch.randn(1, 3, 6, generator=g, dtype=torch.float64)}
    frames = [torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    return weights, frames, {n: magnitude_order(w) for n, w in weights.items()}


def test_measured_curves_prune_each_layer_alone_and_leave_weights_untouched(setup):
    weights, _, orders = setup
    originals = {n: w.clone() for n, w in weights.items()}
    calls = []

    def fn(name, pruned):
        calls.append(name)
        zeros = (pruned == 0).reshape(-1)
        m = int(zeros.sum())
        assert bool(zeros[orders[name][:m]].all())  # a prefix of the order is pruned ...
        assert torch.equal(pruned.reshape(-1)[~zeros], weights[name].reshape(-1)[~zeros])  # ... and the rest intact
        return float(m) ** 0.5 - (m == 5)  # non-monotone on purpose

    num_levels = 40  # more levels than weights: repeated m_k reuse the previous value
    raw = measured_curves(weights, orders, num_levels, fn, monotone=False)
    for name, w in weights.items():
        counts = level_counts(num_levels, w.numel())
        np.testing.assert_allclose(raw[name], counts**0.5 - (counts == 5))
        assert calls.count(name) == w.numel()
        assert torch.equal(w, originals[name])
    mono = measured_curves(weights, orders, num_levels, fn)
    assert all(np.array_equal(mono[n], np.maximum.accumulate(raw[n])) for n in weights)


def test_measured_equals_fisher_curves_when_distortion_is_quadratic(setup):
    weights, frames, orders = setup
    num_levels = 8

    def fn(name, pruned):
        model = {**weights, name: pruned}
        d = [detection_distortion(linear_heads(weights, x), linear_heads(model, x), GROUPS, LAMBDAS) for x in frames]
        return float(torch.stack(d).mean())

    measured = measured_curves(weights, orders, num_levels, fn, monotone=False)
    jac = [jacobians(linear_heads, weights, x) for x in frames]
    a = element_weights(linear_heads(weights, frames[0]), LAMBDAS)
    fisher = exact_accumulator(weights, orders, num_levels, jac, a, damping=0.0).curves(monotone=False)
    for name in weights:
        np.testing.assert_allclose(measured[name], fisher[name], rtol=1e-10, atol=1e-14)


def test_measured_rejects_mismatched_orders(setup):
    weights, _, orders = setup
    with pytest.raises(ValueError, match="order"):
        measured_curves(weights, {"reg": orders["reg"]}, 4, lambda n, w: 0.0)
    with pytest.raises(ValueError, match="permutation"):
        measured_curves(weights, {**orders, "cls": orders["reg"]}, 4, lambda n, w: 0.0)
