#!/usr/bin/env bash
# The CUDA stack for dm3d-exp on a machine with one NVIDIA GPU (issue 13 GPU path), then its check.
#
#   bash bench/gpu_stack.sh download   # on a machine with network: wheels for Python 3.12 into .whl/
#   bash bench/gpu_stack.sh            # on the GPU machine (offline is fine with .whl/): install, build, verify
#
# Install: the project's Python dependencies from .whl/ (or the index) on top of the machine's own CUDA
# torch; spconv-cu124 + cumm-cu124 (STACK.md: spconv 2.3.8 works on H100/H200); mmcv 2.1.0 compiled with
# CUDA ops for this GPU's architecture (~5 min on 16 cores), its wheel cached under
# ~/.cache/dm3d-exp/wheels/mmcv-2.1.0-torch<ver>-cu<ver>-sm<arch>-<py>/ so the next run takes seconds.
# Verify (bench/results/gpu_stack.json): CUDA Voxelization and nms_rotated equal the CPU ones, a spconv
# SubMConv3d on CUDA equals the same layer on CPU, mmdet3d's models import. Exit 1 on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHL=${WHL:-.whl}
PKGS=(mmengine==0.10.7 mmdet==3.3.0 mmdet3d==1.4.0 spconv-cu124==2.3.8 cumm-cu124==0.7.11 pccm ccimport lark fire
      hydra-core omegaconf antlr4-python3-runtime==4.9.3 addict yapf terminaltables rich tqdm filelock
      shapely numba llvmlite trimesh pandas matplotlib opencv-python-headless pycocotools nuscenes-devkit==1.2.0)
log() { printf '[gpu-stack %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [[ "${1:-}" == "download" ]]; then
  mkdir -p "$WHL"
  grep -qx "/$WHL/" .git/info/exclude 2>/dev/null || echo "/$WHL/" >> .git/info/exclude
  for p in "${PKGS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$WHL" "$p" || "$PY" -m pip download -q --no-deps --no-binary=:none: -d "$WHL" "$p"
  done
  "$PY" -m pip download -q --no-deps --no-binary=:all: -d "$WHL" mmcv==2.1.0   # the sdist, compiled there
  log "wheels in $WHL: $(ls "$WHL" | wc -l) files"
  exit 0
fi

"$PY" -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"' \
  || { echo "error: torch ($("$PY" -c 'import torch; print(torch.__version__)')) sees no CUDA device" >&2; exit 2; }
INSTALL=("$PY" -m pip install -q --disable-pip-version-check --no-deps)
[[ -d "$WHL" ]] && INSTALL+=(--no-index --find-links "$WHL")
log "python dependencies"
"${INSTALL[@]}" "${PKGS[@]}"
"${INSTALL[@]}" -e .

ARCH=$("$PY" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}.{n}")')
KEY=$("$PY" -c 'import sys, torch; print(f"torch{torch.__version__.replace(\"+\", \"_\")}-cu{torch.version.cuda}-cp{sys.version_info[0]}{sys.version_info[1]}")')
CACHE=${DM3D_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dm3d-exp/wheels}/mmcv-2.1.0-$KEY-sm${ARCH/./}
if ! "$PY" -c 'import mmcv.ops, torch; from mmcv.ops import nms_rotated' 2>/dev/null \
   || ! "$PY" -c 'import mmcv._ext' 2>/dev/null; then
  whl=$(ls "$CACHE"/mmcv-2.1.0-*.whl 2>/dev/null | head -1 || true)
  if [[ -z "$whl" ]]; then
    log "building mmcv 2.1.0 with CUDA ops for sm_$ARCH (about 5 min on 16 cores) into $CACHE"
    tmp=$(mktemp -d)
    src=$(ls "$WHL"/mmcv-2.1.0.tar.gz 2>/dev/null || echo mmcv==2.1.0)
    TORCH_CUDA_ARCH_LIST=$ARCH MMCV_WITH_OPS=1 FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp" "$src"
    mkdir -p "$CACHE"
    for f in "$tmp"/*.whl; do mv "$f" "$CACHE/.$(basename "$f").part"; mv "$CACHE/.$(basename "$f").part" "$CACHE/$(basename "$f")"; done
    rm -rf "$tmp"
    whl=$(ls "$CACHE"/mmcv-2.1.0-*.whl | head -1)
  fi
  log "installing $whl"
  "${INSTALL[@]}" "$whl"
fi

log "verifying"
mkdir -p bench/results
"$PY" - <<'PYEOF'
import json, sys

import torch

checks = {}
try:
    import mmcv
    from mmcv.ops import Voxelization, nms_rotated

    pts = torch.rand(20000, 4) * torch.tensor([50.0, 80.0, 4.0, 1.0]) - torch.tensor([0.0, 40.0, 3.0, 0.0])
    vox = dict(voxel_size=[0.2, 0.2, 4.0], point_cloud_range=[0, -40, -3, 50, 40, 1], max_num_points=32,
               max_voxels=20000)
    cpu_v, cpu_c, cpu_n = Voxelization(**vox)(pts)
    gpu_v, gpu_c, gpu_n = Voxelization(**vox)(pts.cuda())
    key = lambda c: sorted(map(tuple, c.tolist()))  # noqa: E731 - voxel order differs between devices
    checks["mmcv_voxelization_cuda_equals_cpu"] = key(cpu_c) == key(gpu_c.cpu())
    boxes = torch.rand(300, 5) * torch.tensor([50.0, 50.0, 4.0, 2.0, 3.14])
    scores = torch.rand(300)
    keep_cpu = nms_rotated(boxes, scores, 0.3)[1]
    keep_gpu = nms_rotated(boxes.cuda(), scores.cuda(), 0.3)[1].cpu()
    checks["mmcv_nms_rotated_cuda_equals_cpu"] = sorted(keep_cpu.tolist()) == sorted(keep_gpu.tolist())
    checks["mmcv"] = mmcv.__version__
except Exception as e:  # noqa: BLE001 - reported as a failed check
    checks["mmcv_error"] = repr(e)
try:
    import spconv
    import spconv.pytorch as sp

    torch.manual_seed(0)
    coords = torch.unique(torch.randint(0, 40, (5000, 3)), dim=0)
    idx = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int64), coords], 1).int()
    feats = torch.randn(len(coords), 16)
    conv = sp.SubMConv3d(16, 32, 3, bias=False, indice_key="k")
    out_gpu = conv.cuda()(sp.SparseConvTensor(feats.cuda(), idx.cuda(), [40, 40, 40], 1)).dense().cpu()
    ref = torch.nn.functional.conv3d(
        sp.SparseConvTensor(feats, idx, [40, 40, 40], 1).dense(),
        conv.weight.detach().cpu().permute(0, 4, 1, 2, 3), padding=1)  # spconv 2: [out, kz, ky, kx, in]
    active = sp.SparseConvTensor(torch.ones(len(coords), 1), idx, [40, 40, 40], 1).dense() > 0
    err = float(((out_gpu - ref) * active).abs().max() / ref.abs().max())
    checks["spconv_subm_cuda_rel_error"] = err
    checks["spconv_subm_cuda_matches_dense_conv"] = err < 1e-3
    checks["spconv"] = spconv.__version__
except Exception as e:  # noqa: BLE001
    checks["spconv_error"] = repr(e)
try:
    import mmdet3d.models  # noqa: F401

    import dm3d_exp  # noqa: F401
    checks["mmdet3d_imports"] = True
except Exception as e:  # noqa: BLE001
    checks["mmdet3d_error"] = repr(e)
checks.update(torch=torch.__version__, cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(0))
json.dump(checks, open("bench/results/gpu_stack.json", "w"), indent=1)
print(json.dumps(checks, indent=1))
ok = all(v for k, v in checks.items() if k.endswith(("_cpu", "_conv", "_imports"))) and not any(k.endswith("_error") for k in checks)
sys.exit(0 if ok else 1)
PYEOF
log "ok: bench/results/gpu_stack.json"
