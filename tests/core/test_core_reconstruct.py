"""Fixed-mask reconstruction (METHOD.md §11.1) against brute-force least squares on tiny layers."""
import numpy as np
import pytest
import torch

from dm3d_exp.core.reconstruct import (LayerStatistics, ReconstructionError, check_rank, damping_value,
                                       output_error, reconstruct_rows)


def _problem(seed, cout=5, d=9, n=60, density=0.5, cross=False):
    g = torch.Generator().manual_seed(seed)
    x_d = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    x_p = x_d + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64) if cross else x_d
    w = torch.randn(cout, d, generator=g, dtype=torch.float64)
    mask = torch.rand(cout, d, generator=g) < density
    stats = LayerStatistics(d, cross=cross)
    for part in torch.split(torch.arange(n), 17):  # streamed in uneven chunks
        stats.add(x_p[part], x_d[part] if cross else None)
    return x_p, x_d, w, mask, stats


def _brute_force(x_p, x_d, w, mask, damp):
    """Per row: min ||X_p[:, S] v - X_d w||^2 / n + damp ||v - w_S||^2 by an augmented lstsq (numpy)."""
    n = x_p.shape[0]
    out = np.zeros(tuple(w.shape))
    for i in range(w.shape[0]):
        s = mask[i].numpy()
        if not s.any():
            continue
        a = np.vstack([x_p.numpy()[:, s] / np.sqrt(n), np.sqrt(damp) * np.eye(int(s.sum()))])
        b = np.concatenate([(x_d.numpy() @ w[i].numpy()) / np.sqrt(n), np.sqrt(damp) * w[i].numpy()[s]])
        out[i, s] = np.linalg.lstsq(a, b, rcond=None)[0]
    return out


@pytest.mark.parametrize("density", [0.2, 0.5, 0.85])  # kept-block solve, both, pruned-block (OBS) solve
@pytest.mark.parametrize("cross", [False, True], ids=["dense_weights", "dense_outputs"])
def test_rows_equal_brute_force_least_squares(density, cross):
    for seed in range(4):
        x_p, x_d, w, mask, stats = _problem(seed, density=density, cross=cross)
        h, c, dd = stats.moments()
        solve = reconstruct_rows(w, mask, h, c, dd, alpha=0.01)
        ref = _brute_force(x_p, x_d, w, mask, solve.damping)
        np.testing.assert_allclose(solve.weights.numpy(), ref, rtol=1e-7, atol=1e-9)
        assert not bool(solve.weights[~mask].any())


def test_statistics_stream_to_the_batch_moments():
    x_p, x_d, _, _, stats = _problem(3, cross=True)
    h, c, dd = stats.moments()
    n = x_p.shape[0]
    torch.testing.assert_close(h, x_p.T @ x_p / n)
    torch.testing.assert_close(c, x_p.T @ x_d / n)
    torch.testing.assert_close(dd, x_d.T @ x_d / n)


@pytest.mark.parametrize("cross", [False, True])
def test_reconstruction_never_worse_than_zeroing_on_calibration_data(cross):
    for seed in range(10):
        x_p, x_d, w, mask, stats = _problem(seed, cout=8, d=12, n=40, density=0.4, cross=cross)
        h, c, dd = stats.moments()
        solve = reconstruct_rows(w, mask, h, c, dd, alpha=1e-6)
        n = x_p.shape[0]
        direct = lambda v: float(((x_p @ v.T - x_d @ w.T) ** 2).sum() / n / ((x_d @ w.T) ** 2).sum() * n)
        assert solve.error_reconstructed == pytest.approx(direct(solve.weights), rel=1e-6)
        assert solve.error_zeroed == pytest.approx(direct(w * mask), rel=1e-6)
        assert solve.error_reconstructed < solve.error_zeroed


def test_dense_rows_are_kept_and_empty_rows_stay_zero():
    _, _, w, _, stats = _problem(1)
    h, _, _ = stats.moments()
    mask = torch.ones_like(w, dtype=torch.bool)
    mask[2] = False
    solve = reconstruct_rows(w, mask, h, alpha=0.01)
    torch.testing.assert_close(solve.weights[[0, 1, 3, 4]], w[[0, 1, 3, 4]])  # dense_weights target: w* = w
    assert not bool(solve.weights[2].any())


def test_damping_shrinks_towards_the_dense_weights_not_towards_zero():
    """OBS form: huge damping leaves the kept weights at their dense values (never scales them to 0)."""
    _, _, w, mask, stats = _problem(2)
    h, _, _ = stats.moments()
    solve = reconstruct_rows(w, mask, h, alpha=1e8)
    torch.testing.assert_close(solve.weights, w * mask, rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_one_clear_error():
    _, _, w, mask, stats = _problem(0)
    h, _, _ = stats.moments()
    with pytest.raises(ValueError, match="alpha=0"):
        reconstruct_rows(w, mask, h, alpha=0.0)
    with pytest.raises(ValueError, match="bool mask"):
        reconstruct_rows(w, mask.double(), h)
    with pytest.raises(ReconstructionError, match="all zero"):
        reconstruct_rows(w, mask, torch.zeros_like(h))
    with pytest.raises(ReconstructionError, match="no calibration samples"):
        LayerStatistics(4).moments()
    with pytest.raises(ReconstructionError, match="layer conv: 3 calibration samples for 8 inputs"):
        check_rank("conv", 3, 8)
    assert damping_value(h, 0.5) == pytest.approx(0.5 * float(torch.diagonal(h).mean()))
    assert output_error(w, w, h, h, h) == pytest.approx(0.0, abs=1e-9)
