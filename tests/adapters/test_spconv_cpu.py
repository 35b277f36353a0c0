"""The race-free spconv CPU convolution (adapters/spconv_cpu.py): the same values and gradients as
spconv's own single-threaded path, and byte-identical results on every call at any torch thread count."""
import numpy as np
import pytest
import torch

spconv = pytest.importorskip("spconv.pytorch", reason="spconv not installed")

from dm3d_exp.adapters import spconv_cpu  # noqa: E402
from dm3d_exp.adapters.runtime import setup_mmdet3d  # noqa: E402


def _input(n=3000, shape=(21, 40, 40), cin=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = []
    for b in range(2):
        flat = torch.randperm(int(np.prod(shape)), generator=g)[:n]
        coords = torch.stack(torch.unravel_index(flat, shape), 1).int()
        idx.append(torch.cat([torch.full((n, 1), b, dtype=torch.int32), coords], 1))
    return torch.cat(idx), torch.randn(2 * n, cin, generator=g), list(shape)


def _stack():
    """SubM -> strided SparseConv -> SparseInverseConv back to the input coordinates."""
    torch.manual_seed(0)
    net = spconv.SparseSequential(
        spconv.SubMConv3d(8, 16, 3, bias=False, indice_key="s1"),
        spconv.SparseConv3d(16, 12, 3, stride=2, padding=1, bias=False, indice_key="down"),
        spconv.SparseInverseConv3d(12, 6, 3, bias=False, indice_key="down"))
    for layer in net:
        torch.nn.init.normal_(layer.weight, std=0.3)
    return net


def _run(threads: int):
    """Output features, input gradient and weight gradients of :func:`_stack` on ``threads`` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        indices, feats, shape = _input()
        feats.requires_grad_(True)
        net = _stack()
        out = net(spconv.SparseConvTensor(feats, indices, shape, 2)).features
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        return [out.detach(), feats.grad] + [layer.weight.grad for layer in net]
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def original_spconv(monkeypatch):
    """spconv's own CPU functions (as before :func:`spconv_cpu.install`), restored afterwards."""
    import spconv.pytorch.ops as ops

    setup_mmdet3d()  # installs the race-free path (and the CPU stream stub the original backward needs)
    assert getattr(ops.indice_conv, "__wrapped_by_dm3d__", False)
    monkeypatch.setattr(ops, "indice_conv", ops.indice_conv.__wrapped__)
    monkeypatch.setattr(ops, "indice_conv_backward", ops.indice_conv_backward.__wrapped__)


def test_matches_spconv_single_thread(original_spconv):
    reference = _run(1)  # spconv's own path, correct on one thread
    import spconv.pytorch.ops as ops

    ops.indice_conv = spconv_cpu._cpu_dispatch(ops.indice_conv, spconv_cpu.indice_conv,
                                               bool(ops.ALL_WEIGHT_IS_KRSC), bool(ops.FILTER_HWIO))
    ops.indice_conv_backward = spconv_cpu._cpu_dispatch(
        ops.indice_conv_backward, spconv_cpu.indice_conv_backward,
        bool(ops.ALL_WEIGHT_IS_KRSC), bool(ops.FILTER_HWIO))
    ours = _run(2)
    for name, a, b in zip(["out", "d_input", "d_subm", "d_conv", "d_inverse"], ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


def test_repeated_calls_are_identical_at_every_thread_count():
    """No race: the same bytes on every call for a thread count, and the same values across counts up to
    the rounding of torch's matrix products (spconv's own path differs by up to 40 % of the output here)."""
    setup_mmdet3d()
    one = _run(1)
    for threads in (1, 2, 4):
        first, again = _run(threads), _run(threads)
        for a, b, ref in zip(first, again, one):
            assert torch.equal(a, b)
            torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-4)


def test_install_is_idempotent():
    import spconv.pytorch.ops as ops

    setup_mmdet3d()
    before = ops.indice_conv
    spconv_cpu.install()
    assert ops.indice_conv is before
