"""CPU implementations of the mmcv point ops that PV-RCNN's inference path needs.

mmcv 2.1 ships ``furthest_point_sample``, the stacked ``ball_query`` and the stacked
``grouping_operation`` as CUDA (and NPU/MLU) kernels only, so mmdet3d's PointVoxelRCNN cannot run on a
CPU. These functions compute the same results in plain torch, following the kernels' definitions:

- furthest-point sampling: start at point 0, keep each point's squared distance to the selected set
  (initialised to 1e10) and repeatedly take the farthest point (first index on ties);
- stacked ball query: for each centre, the first ``nsample`` points of its own batch element (in index
  order, indices local to that element) with squared distance < r^2; remaining slots repeat the first
  hit; a centre with no hit gets ``-1`` in slot 0 and zeros elsewhere (the caller masks it);
- stacked grouping: ``out[m, c, s] = features[start(b(m)) + idx[m, s], c]``, zero for indices outside
  the element (differentiable in ``features``, as the CUDA op's backward).

:func:`install` routes mmdet3d's module-level references through dispatchers that call mmcv's kernel
for CUDA tensors and these implementations otherwise.
"""
from __future__ import annotations

import functools

import torch

_CHUNK_ELEMENTS = 1 << 22  # centres x points per distance block in ball_query


def furthest_point_sample(points_xyz: torch.Tensor, num_points: int) -> torch.Tensor:
    """Indices ``(B, num_points)`` (int32) of iterative farthest-point sampling of ``points_xyz (B, N, 3)``."""
    b, n, _ = points_xyz.shape
    out = torch.zeros(b, num_points, dtype=torch.int32)
    xyz = points_xyz.detach().float()
    for i in range(b):
        nearest = torch.full((n,), 1e10, dtype=torch.float32)
        last = 0
        for j in range(1, num_points):
            d = ((xyz[i] - xyz[i, last]) ** 2).sum(-1)
            nearest = torch.minimum(nearest, d)
            last = int(torch.argmax(nearest))
            out[i, j] = last
    return out.to(points_xyz.device)


def _batch_offsets(counts: torch.Tensor) -> list[int]:
    c = [int(v) for v in counts.tolist()]
    return [sum(c[:k]) for k in range(len(c) + 1)]


def stacked_ball_query(max_radius: float, sample_num: int, xyz: torch.Tensor, center_xyz: torch.Tensor,
                       xyz_batch_cnt: torch.Tensor, center_xyz_batch_cnt: torch.Tensor) -> torch.Tensor:
    """Neighbour indices ``(M, sample_num)`` (int32, local to each batch element) of stacked centres."""
    idx = torch.zeros(center_xyz.shape[0], sample_num, dtype=torch.int32)
    p_off, c_off = _batch_offsets(xyz_batch_cnt), _batch_offsets(center_xyz_batch_cnt)
    r2 = float(max_radius) ** 2
    for b in range(len(p_off) - 1):
        pts = xyz[p_off[b]:p_off[b + 1]].detach().float()
        n = pts.shape[0]
        step = max(1, _CHUNK_ELEMENTS // max(n, 1))
        for s in range(c_off[b], c_off[b + 1], step):
            ctr = center_xyz[s:min(s + step, c_off[b + 1])].detach().float()
            diff = ctr[:, None, :] - pts[None, :, :]
            d2 = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]
            hit = d2 < r2
            rank = torch.cumsum(hit, dim=1) - 1
            take = hit & (rank < sample_num)
            rows, cols = take.nonzero(as_tuple=True)
            block = torch.zeros(ctr.shape[0], sample_num, dtype=torch.int32)
            block[rows, rank[rows, cols]] = cols.to(torch.int32)
            count = hit.sum(1)
            slot = torch.arange(sample_num)[None, :]
            block = torch.where((slot >= count[:, None]) & (count[:, None] > 0), block[:, :1], block)
            block[count == 0, 0] = -1
            idx[s:s + ctr.shape[0]] = block
    return idx.to(center_xyz.device)


def stacked_grouping(features: torch.Tensor, indices: torch.Tensor, features_batch_cnt: torch.Tensor,
                     indices_batch_cnt: torch.Tensor) -> torch.Tensor:
    """Grouped features ``(M, C, nsample)`` of stacked ``features (N1+N2.., C)`` at ``indices (M, nsample)``."""
    m, nsample = indices.shape
    per_element = indices_batch_cnt.long().cpu()
    sizes = features_batch_cnt.long().cpu()
    start = torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, per_element)
    size = torch.repeat_interleave(sizes, per_element)
    local = indices.long().cpu()
    valid = (local >= 0) & (local < size[:, None])
    flat = torch.where(valid, local + start[:, None], torch.zeros_like(local)).to(features.device)
    gathered = features.index_select(0, flat.reshape(-1)).reshape(m, nsample, -1)
    gathered = gathered * valid.to(features.device, features.dtype)[..., None]
    return gathered.permute(0, 2, 1).contiguous()


def _dispatch(cuda_op, cpu_op, tensor_arg: int):
    @functools.wraps(cuda_op)
    def op(*args, **kwargs):
        if args[tensor_arg].is_cuda:
            return cuda_op(*args, **kwargs)
        return cpu_op(*args, **kwargs)

    return op


def _ball_query_cpu(min_radius, max_radius, sample_num, xyz, center_xyz, xyz_batch_cnt=None,
                    center_xyz_batch_cnt=None):
    if xyz_batch_cnt is None or center_xyz_batch_cnt is None:
        raise NotImplementedError("ball_query on CPU: only the stacked form (with batch counts) is implemented")
    return stacked_ball_query(max_radius, sample_num, xyz, center_xyz, xyz_batch_cnt, center_xyz_batch_cnt)


def _grouping_cpu(features, indices, features_batch_cnt=None, indices_batch_cnt=None):
    if features_batch_cnt is None or indices_batch_cnt is None:
        raise NotImplementedError("grouping_operation on CPU: only the stacked form (with batch counts) is implemented")
    return stacked_grouping(features, indices, features_batch_cnt, indices_batch_cnt)


@functools.cache
def install() -> None:
    """Point mmdet3d's PV-RCNN modules (VoxelSetAbstraction, StackedSAModuleMSG) at CPU-capable ops."""
    from mmdet3d.models.layers.pointnet_modules import stack_point_sa_module as sa
    from mmdet3d.models.middle_encoders import voxel_set_abstraction as vsa

    vsa.furthest_point_sample = _dispatch(vsa.furthest_point_sample, furthest_point_sample, 0)
    sa.ball_query = _dispatch(sa.ball_query, _ball_query_cpu, 3)
    sa.grouping_operation = _dispatch(sa.grouping_operation, _grouping_cpu, 0)
