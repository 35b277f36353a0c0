import numpy as np
import pytest
import torch

from core_tiny_model import (
    GROUPS,
    LAMBDAS,
    element_weights,
    exact_accumulator,
    forward,
    jacobians,
    make_frames,
    make_weights,
)
from dm3d_exp.core.distortion import detection_distortion, probe_scalar
from dm3d_exp.core.fisher import FisherCurveAccumulator, GradientMeanAccumulator, PerturbationCurveAccumulator
from dm3d_exp.core.levels import level_counts
from dm3d_exp.core.ranking import magnitude_order

NUM_LEVELS = 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny float64 ops: threads only add contention


@pytest.fixture(scope="module")
def setup(one_torch_thread):
    weights, frames = make_weights(), make_frames()
    g = torch.Generator().manual_seed(5)
    orders = {n: magnitude_order(w) for n, w in weights.items()}
    orders["fc"] = torch.randperm(weights["fc"].numel(), generator=g)  # any permutation works
    jac = [jacobians(forward, weights, x) for x in frames]
    a = element_weights(forward(weights, frames[0]))
    fisher = {n: sum(j[n].T @ (a[:, None] * j[n]) for j in jac) / len(frames) for n in weights}  # G = E[J^T A J]
    return weights, frames, orders, jac, a, fisher


def pruning_deltas(weights, orders, name):
    """dW(k) = -W on the first m_k weights of the order, flattened, for k = 0..K."""
    w = weights[name].reshape(-1)
    out = []
    for m in level_counts(NUM_LEVELS, w.numel()):
        dw = torch.zeros_like(w)
        dw[orders[name][:m]] = -w[orders[name][:m]]
        out.append(dw)
    return out


def test_exact_probes_give_the_quadratic_form_plus_damping(setup):
    weights, _, orders, jac, a, fisher = setup
    kappa = 1e-3
    curves = exact_accumulator(weights, orders, NUM_LEVELS, jac, a, damping=kappa).curves(monotone=False)
    for name in weights:
        expected = [float(dw @ fisher[name] @ dw + kappa * dw @ dw) for dw in pruning_deltas(weights, orders, name)]
        np.testing.assert_allclose(curves[name], expected, rtol=1e-10, atol=1e-14)


def test_relative_damping_squared_form_and_monotone_envelope(setup):
    weights, _, orders, jac, a, fisher = setup
    plain = exact_accumulator(weights, orders, NUM_LEVELS, jac, a, damping=0.0)
    rel = exact_accumulator(weights, orders, NUM_LEVELS, jac, a, damping=0.1, damping_mode="relative")
    raw, damped = plain.curves(monotone=False), rel.curves(monotone=False)
    squared = plain.curves(form="squared", monotone=False)
    decreasing = 0
    for name in weights:
        kappa = 0.1 * float(torch.diagonal(fisher[name]).mean())
        assert rel.kappa(name) == pytest.approx(kappa, rel=1e-10)
        q = [float(dw @ dw) for dw in pruning_deltas(weights, orders, name)]
        np.testing.assert_allclose(damped[name] - raw[name], kappa * np.array(q), rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(squared[name], raw[name] ** 2, rtol=1e-12)
        mono = plain.curves(monotone=True)[name]
        np.testing.assert_array_equal(mono, np.maximum.accumulate(raw[name]))
        decreasing += int(np.any(np.diff(raw[name]) < 0))
    assert decreasing > 0  # the envelope did change something


def test_random_probes_are_unbiased_within_monte_carlo_error(setup):
    weights, frames, orders, jac, a, fisher = setup
    probes = 400
    acc = FisherCurveAccumulator(weights, orders, NUM_LEVELS, damping=0.0)
    leaves = {n: w.clone().requires_grad_(True) for n, w in weights.items()}
    gen = torch.Generator().manual_seed(11)
    for x in frames:
        out = forward(leaves, x)
        for _ in range(probes):
            sigma = probe_scalar(out, GROUPS, LAMBDAS, "random", gen)
            grads = torch.autograd.grad(sigma, list(leaves.values()), retain_graph=True)
            acc.add(dict(zip(leaves, grads)))
    curves = acc.curves(monotone=False)
    samples = len(frames) * probes
    for name in weights:
        for k, dw in enumerate(pruning_deltas(weights, orders, name)):
            exact = float(dw @ fisher[name] @ dw)
            # P = v^T u_n with u_n = sqrt(A) J_n dW: E[P^2] = |u_n|^2, Var[P^2] = 2 |u_n|^4
            u2 = [float(((a.sqrt() * (j[name] @ dw)) ** 2).sum()) for j in jac]
            sd = (probes * sum(2 * v**2 for v in u2)) ** 0.5 / samples
            assert abs(curves[name][k] - exact) <= 5 * sd + 1e-15


def test_quadratic_form_is_the_second_order_distortion(setup):
    weights, frames, orders, _, _, fisher = setup
    for name in weights:
        dw = pruning_deltas(weights, orders, name)[NUM_LEVELS // 2]
        t = 1e-4
        shifted = {**weights, name: weights[name] + t * dw.reshape(weights[name].shape)}
        d = np.mean([detection_distortion(forward(weights, x), forward(shifted, x), GROUPS, LAMBDAS).item()
                     for x in frames])
        assert d / t**2 == pytest.approx(float(dw @ fisher[name] @ dw), rel=1e-3)


def test_mean_gradient_of_the_mean_square_probe(setup):
    weights, frames, _, jac, a, _ = setup
    leaves = {n: w.clone().requires_grad_(True) for n, w in weights.items()}
    acc = GradientMeanAccumulator()
    for x in frames:
        sigma = probe_scalar(forward(leaves, x), GROUPS, LAMBDAS, "mean_square")
        acc.add(dict(zip(leaves, torch.autograd.grad(sigma, list(leaves.values())))))
    mean = acc.mean()
    for name in weights:
        y = [torch.cat([forward(weights, x)[k].reshape(-1) for k in sorted(GROUPS)]) for x in frames]
        expected = sum(2 * j[name].T @ (a * yn) for j, yn in zip(jac, y)) / len(frames)  # d/dW sum a y^2
        torch.testing.assert_close(mean[name].reshape(-1), expected, rtol=1e-10, atol=1e-12)


def test_accumulator_rejects_bad_input(setup):
    weights, _, orders, _, _, _ = setup
    with pytest.raises(ValueError, match="order names"):
        FisherCurveAccumulator(weights, {"conv": orders["conv"]}, NUM_LEVELS)
    with pytest.raises(ValueError, match="damping_mode"):
        FisherCurveAccumulator(weights, orders, NUM_LEVELS, damping_mode="adaptive")
    acc = FisherCurveAccumulator(weights, orders, NUM_LEVELS)
    with pytest.raises(ValueError, match="num_samples=0"):
        acc.curves()
    with pytest.raises(ValueError, match="shape"):
        acc.add({n: torch.zeros(1) for n in weights})
    with pytest.raises(ValueError, match="form"):
        acc.add({n: torch.zeros_like(w) for n, w in weights.items()})
        acc.curves(form="cubic")


def _exact_perturbation_accumulator(weights, perturbations, counts, jac, a, **kwargs):
    """The exact probes of exact_accumulator, fed to PerturbationCurveAccumulator."""
    acc = PerturbationCurveAccumulator(perturbations, counts, NUM_LEVELS, **kwargs)
    for j in jac:
        for i in range(a.numel()):
            acc.add({n: (a.numel() * a[i]) ** 0.5 * j[n][i].reshape(weights[n].shape) for n in weights})
    return acc


def test_perturbation_curves_of_arbitrary_perturbations_are_the_quadratic_form(setup):
    """METHOD §11.3: delta(k_j) = dW^T (G + kappa I) dW for any given dW (here random, like reconstructed
    ones: not a prefix of an order), against the explicit Fisher matrix."""
    weights, _, _, jac, a, fisher = setup
    g = torch.Generator().manual_seed(3)
    counts = {n: np.array([0, 1, w.numel() // 2, w.numel()]) for n, w in weights.items()}
    perts = {n: torch.cat([torch.zeros(1, w.numel(), dtype=torch.float64),
                           torch.randn(3, w.numel(), generator=g, dtype=torch.float64)]) for n, w in weights.items()}
    kappa = 1e-3
    acc = _exact_perturbation_accumulator(weights, perts, counts, jac, a, damping=kappa)
    for name, coarse in acc.coarse_curves().items():
        expected = [float(dw @ fisher[name] @ dw + kappa * dw @ dw) for dw in perts[name]]
        np.testing.assert_allclose(coarse, expected, rtol=1e-10, atol=1e-14)
        full = acc.curves(monotone=False)[name]
        m = level_counts(NUM_LEVELS, weights[name].numel())
        at = {int(c): v for c, v in zip(counts[name], expected)}
        for k, mk in enumerate(m):  # exact at the coarse counts, sqrt-linear in between
            if int(mk) in at:
                assert full[k] == pytest.approx(at[int(mk)], rel=1e-10, abs=1e-14)
            else:
                j = int(np.searchsorted(counts[name], mk)) - 1
                c0, c1 = counts[name][j], counts[name][j + 1]
                t = (mk - c0) / (c1 - c0)
                assert full[k] == pytest.approx(((1 - t) * expected[j] ** 0.5 + t * expected[j + 1] ** 0.5) ** 2)


def test_zeroing_perturbations_at_every_level_reproduce_the_fisher_curves(setup):
    """With dW(k) = -W on the order's first m_k weights at every level, the two accumulators agree."""
    weights, _, orders, jac, a, _ = setup
    perts, counts = {}, {}
    for name, w in weights.items():
        m = level_counts(NUM_LEVELS, w.numel())
        keep = np.r_[True, np.diff(m) > 0]  # strictly increasing counts (small layers repeat m_k)
        perts[name] = torch.stack(pruning_deltas(weights, orders, name))[torch.as_tensor(keep)].to(torch.float64)
        counts[name] = m[keep]
    ref = exact_accumulator(weights, orders, NUM_LEVELS, jac, a, damping=1e-4, damping_mode="relative")
    ours = _exact_perturbation_accumulator(weights, perts, counts, jac, a, damping=1e-4, damping_mode="relative")
    for name in weights:
        np.testing.assert_allclose(ours.curves()[name], ref.curves()[name], rtol=1e-9, atol=1e-14)


def test_perturbation_accumulator_rejects_bad_input(setup):
    weights = setup[0]
    name, w = next(iter(weights.items()))
    with pytest.raises(ValueError, match="strictly increasing count"):
        PerturbationCurveAccumulator({name: torch.zeros(2, w.numel())}, {name: np.array([0, 0])}, NUM_LEVELS)
    with pytest.raises(ValueError, match="expected the layer names"):
        acc = PerturbationCurveAccumulator({name: torch.zeros(2, w.numel())}, {name: np.array([0, 3])}, NUM_LEVELS)
        acc.add({"other": torch.zeros(3)})
    with pytest.raises(ValueError, match="num_samples=0"):
        PerturbationCurveAccumulator({name: torch.zeros(2, w.numel())}, {name: np.array([0, 3])}, NUM_LEVELS).curves()
