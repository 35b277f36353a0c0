"""Tiny float64 detector-like models with canonical [K, Cout, Cin] weights and exact Fisher helpers (core tests)."""

import torch

from dm3d_exp.core.fisher import FisherCurveAccumulator

GROUPS = {"reg": "loc", "cls": "conf"}
LAMBDAS = {"loc": 2.0, "conf": 0.5}


def make_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "conv": torch.randn(9, 3, 2, generator=g, dtype=torch.float64) * 0.5,  # Conv2d 2->3, 3x3 (K=9)
        "fc": torch.randn(1, 6, 27, generator=g, dtype=torch.float64) * 0.3,
        "reg": torch.randn(1, 4, 6, generator=g, dtype=torch.float64),
        "cls": torch.randn(1, 3, 6, generator=g, dtype=torch.float64),
    }


def make_frames(n=3, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 2, 5, 5, generator=g, dtype=torch.float64) for _ in range(n)]


def forward(weights, x):
    """conv 3x3 as unfold + matmul (canonical [9, Cout, Cin] -> [Cout, Cin*9], unfold's channel-major columns)
    -> tanh -> fc -> tanh -> heads reg [B,4], cls [B,3]."""
    conv = weights["conv"].permute(1, 2, 0).reshape(3, 18)
    h = torch.tanh(conv @ torch.nn.functional.unfold(x, 3)).flatten(1)
    h = torch.tanh(h @ weights["fc"][0].T)
    return {"reg": h @ weights["reg"][0].T, "cls": h @ weights["cls"][0].T}


def linear_heads(weights, x):
    """Two linear heads on a shared input [B, 6]: D is exactly quadratic in the weight change."""
    return {name: x @ weights[name][0].T for name in ("reg", "cls")}


def element_weights(outputs, lambdas=LAMBDAS):
    """a_i = lambda_group / |y_k| for every output element, flattened in sorted name order."""
    return torch.cat([
        torch.full((outputs[k].numel(),), lambdas[GROUPS[k]] / outputs[k].numel(), dtype=torch.float64)
        for k in sorted(outputs)
    ])


def jacobians(model, weights, x):
    """name -> J [M, numel] of all outputs of model(weights, x) (flattened in sorted name order) wrt each weight."""
    def flat_out(ws):
        out = model(ws, x)
        return torch.cat([out[k].reshape(-1) for k in sorted(out)])

    jac = torch.func.jacrev(flat_out)(weights)
    return {name: j.reshape(j.shape[0], -1) for name, j in jac.items()}


def exact_accumulator(weights, orders, num_levels, jac, a, **kwargs):
    """Probes = scaled basis vectors sqrt(M) e_i, g_i = sqrt(M a_i) J[i]: the mean over (frame, i) of g g^T is
    exactly the frame mean of J^T diag(a) J."""
    acc = FisherCurveAccumulator(weights, orders, num_levels, **kwargs)
    for j in jac:
        for i in range(a.numel()):
            acc.add({n: (a.numel() * a[i]) ** 0.5 * j[n][i].reshape(weights[n].shape) for n in weights})
    return acc
