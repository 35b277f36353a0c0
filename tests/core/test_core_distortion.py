import pytest
import torch

from dm3d_exp.core.distortion import detection_distortion, foreground_weights, probe_scalar

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
