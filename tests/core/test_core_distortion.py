import pytest
import torch

from dm3d_exp.core.distortion import channel_variance, detection_distortion, foreground_weights, probe_scalar

GROUPS = {"hm": "conf", "reg": "loc", "dim": "loc"}
LAMBDAS = {"loc": 1.5, "conf": 0.25}


def outputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {"hm": torch.randn(2, 3, 4, 5, generator=g), "reg": torch.randn(2, 2, 4, 5, generator=g),
            "dim": torch.randn(2, 3, 4, 5, generator=g)}


def test_distortion_is_the_lambda_weighted_sum_of_group_mses():
    dense, pruned = outputs(0), outputs(1)
    expected = 0.0
    for name in dense:
        mse = sum(((a - b) ** 2).item() for a, b in zip(dense[name].reshape(-1), pruned[name].reshape(-1)))
        expected += LAMBDAS[GROUPS[name]] * mse / dense[name].numel()
    assert detection_distortion(dense, pruned, GROUPS, LAMBDAS).item() == pytest.approx(expected, rel=1e-5)
    assert detection_distortion(dense, dense, GROUPS).item() == 0.0


def test_foreground_weighted_distortion_uses_weighted_means():
    dense, pruned = outputs(0), outputs(1)
    w = foreground_weights(dense["hm"])
    assert torch.equal(w, dense["hm"].sigmoid().max(dim=1, keepdim=True).values)
    fg = {"reg": w, "dim": w}
    expected = LAMBDAS["conf"] * ((dense["hm"] - pruned["hm"]) ** 2).mean()
    for name in ("reg", "dim"):
        we = w.expand_as(dense[name])
        expected += LAMBDAS["loc"] * (we * (dense[name] - pruned[name]) ** 2).sum() / we.sum()
    assert detection_distortion(dense, pruned, GROUPS, LAMBDAS, fg).item() == pytest.approx(expected.item(), rel=1e-5)


def test_probe_scalars_follow_their_formulas():
    y = outputs(2)
    gen = torch.Generator().manual_seed(7)
    sigma = probe_scalar(y, GROUPS, LAMBDAS, "random", gen)
    gen.manual_seed(7)
    expected = 0.0
    for name in sorted(y):
        v = torch.randn(y[name].shape, generator=gen)
        expected += (LAMBDAS[GROUPS[name]] / y[name].numel()) ** 0.5 * (v * y[name]).sum()
    assert sigma.item() == pytest.approx(expected.item(), rel=1e-5)
    ms = probe_scalar(y, GROUPS, LAMBDAS, "mean_square")
    assert ms.item() == pytest.approx(sum(LAMBDAS[GROUPS[k]] * (y[k] ** 2).mean().item() for k in y), rel=1e-5)


@pytest.mark.parametrize(
    "groups, lambdas, fg",
    [
        ({"hm": "conf", "reg": "loc"}, LAMBDAS, None),  # "dim" has no group
        ({**GROUPS, "dim": "box"}, LAMBDAS, None),
        (GROUPS, {"loc": 1.0}, None),
        (GROUPS, {"loc": 1.0, "conf": -1.0}, None),
        (GROUPS, LAMBDAS, {"reg": torch.ones(3, 1, 1, 1)}),
        (GROUPS, LAMBDAS, {"reg": -torch.ones(2, 1, 4, 5)}),
        (GROUPS, LAMBDAS, {"cls": torch.ones(2, 1, 4, 5)}),
    ],
)
def test_bad_groups_lambdas_and_weights_raise(groups, lambdas, fg):
    with pytest.raises(ValueError):
        detection_distortion(outputs(0), outputs(1), groups, lambdas, fg)


def test_mismatched_outputs_and_probe_kind_raise():
    dense = outputs(0)
    with pytest.raises(ValueError, match="shape"):
        detection_distortion(dense, {**dense, "hm": dense["hm"][:1]}, GROUPS)
    with pytest.raises(ValueError, match="names"):
        detection_distortion(dense, {"hm": dense["hm"]}, GROUPS)
    with pytest.raises(ValueError, match="kind"):
        probe_scalar(dense, GROUPS, kind="hutchinson")


def _scaled(out, scales):
    return {k: v * scales[k].view(1, -1, 1, 1) for k, v in out.items()}


@pytest.mark.parametrize("weighted", [False, True])
def test_channel_normalised_distortion_is_unit_free_and_follows_its_formula(weighted):
    """normalize='channel_variance': sum over channels of (weighted) MSE / (weighted) dense variance, so
    rescaling any output channel of both models (changing its units) leaves D unchanged."""
    dense, pruned = outputs(0), outputs(1)
    w = foreground_weights(dense["hm"]) if weighted else None
    fg = {k: w for k in dense} if weighted else None
    d = detection_distortion(dense, pruned, GROUPS, LAMBDAS, fg, normalize="channel_variance").item()
    expected = 0.0
    for name, y in dense.items():
        we = (w if weighted else torch.ones(1, 1, 1, 1)).expand_as(y).double()
        y64, e = y.double(), (y.double() - pruned[name].double()) ** 2
        for c in range(y.shape[1]):
            wc = we[:, c]
            mu = (wc * y64[:, c]).sum() / wc.sum()
            var = (wc * (y64[:, c] - mu) ** 2).sum() / wc.sum()
            expected += LAMBDAS[GROUPS[name]] * (wc * e[:, c]).sum() / (we.sum() * var)
    assert d == pytest.approx(expected.item(), rel=1e-4)
    gen = torch.Generator().manual_seed(3)
    scales = {k: torch.rand(v.shape[1], generator=gen) * 100 + 0.01 for k, v in dense.items()}
    d_scaled = detection_distortion(_scaled(dense, scales), _scaled(pruned, scales), GROUPS, LAMBDAS,
                                    fg, normalize="channel_variance").item()
    assert d_scaled == pytest.approx(d, rel=1e-4)
    plain = detection_distortion(dense, pruned, GROUPS, LAMBDAS, fg).item()
    plain_scaled = detection_distortion(_scaled(dense, scales), _scaled(pruned, scales), GROUPS, LAMBDAS, fg).item()
    assert abs(plain_scaled / plain - 1) > 0.1  # the paper's plain D depends on the units


def test_channel_normalised_probe_uses_the_same_weights():
    y = outputs(4)
    gen = torch.Generator().manual_seed(9)
    sigma = probe_scalar(y, GROUPS, LAMBDAS, "random", gen, normalize="channel_variance")
    gen.manual_seed(9)
    expected = 0.0
    for name in sorted(y):
        v = torch.randn(y[name].shape, generator=gen)
        var = y[name].var(dim=(0, 2, 3), unbiased=False).view(1, -1, 1, 1)
        a = LAMBDAS[GROUPS[name]] / (y[name].numel() * var)
        expected += (a.sqrt() * v * y[name]).sum()
    assert sigma.item() == pytest.approx(expected.item(), rel=1e-5)


def test_channel_variance_floors_constant_channels():
    y = torch.randn(2, 3, 4, 4)
    y[:, 1] = 5.0
    var = channel_variance(y)
    assert var.shape == (1, 3, 1, 1) and torch.all(torch.isfinite(1 / var))
    assert var[0, 1, 0, 0] == pytest.approx(1e-6 * float(var.max()), rel=1e-3)
    with pytest.raises(ValueError, match="channel normalisation"):
        channel_variance(torch.randn(5))
    with pytest.raises(ValueError, match="normalize"):
        detection_distortion(outputs(0), outputs(1), GROUPS, normalize="zscore")
