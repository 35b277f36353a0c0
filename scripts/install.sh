#!/usr/bin/env bash
# Idempotent installer for dm3d-exp: creates .venv, installs the measured OpenMMLab 3D stack
# (../shared/docs/STACK.md) and the project. The mmcv 2.1.0 wheel (CPU ops, ~12 min to compile on
# 2 cores) is built once and cached under the user cache dir, keyed by mmcv/torch/python versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
C=requirements/constraints.txt
STAMP="$VENV/.dm3d-install-stamp"
want=$(cat "$C" pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
log() { printf '[install %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
[[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
P="$VENV/bin/python"
PIP=("$P" -m pip install -q --disable-pip-version-check -c "$C")
"$P" -m pip install -q --disable-pip-version-check --upgrade "pip>=24,<27"
log "torch + build tools"
"${PIP[@]}" torch setuptools wheel ninja "numpy<2" mmengine

PYV=$("$P" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
TORCHV=$("$P" -c 'import torch; print(torch.__version__.replace("+", "_"))')
CACHE=${DM3D_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dm3d-exp/wheels}/mmcv-2.1.0-torch$TORCHV-$PYV
if ! "$P" -c 'import mmcv._ext' 2>/dev/null; then
  whl=$(ls "$CACHE"/mmcv-2.1.0-*.whl 2>/dev/null | head -1 || true)
  if [[ -z "$whl" ]]; then
    log "building mmcv 2.1.0 with CPU ops (one time, ~12 min on 2 cores) into $CACHE"
    tmp=$(mktemp -d)
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$P" -m pip wheel -q --no-deps --no-build-isolation -c "$C" -w "$tmp" mmcv==2.1.0
    # strip debug symbols: 32 MB -> ~1.4 MB wheel (STACK.md)
    "$P" - "$tmp" <<'PYEOF'
import glob, os, subprocess, sys, zipfile, tempfile, shutil
d = sys.argv[1]
w = glob.glob(os.path.join(d, "mmcv-*.whl"))[0]
x = tempfile.mkdtemp()
zipfile.ZipFile(w).extractall(x)
for so in glob.glob(os.path.join(x, "mmcv", "_ext*.so")):
    subprocess.run(["strip", "--strip-debug", so], check=True)
os.remove(w)
subprocess.run([sys.executable, "-m", "wheel", "pack", x, "-d", d], check=True, stdout=subprocess.DEVNULL)
shutil.rmtree(x)
PYEOF
    mkdir -p "$CACHE"
    for f in "$tmp"/*.whl; do mv "$f" "$CACHE/.$(basename "$f").part"; mv "$CACHE/.$(basename "$f").part" "$CACHE/$(basename "$f")"; done
    rm -rf "$tmp"
    whl=$(ls "$CACHE"/mmcv-2.1.0-*.whl | head -1)
  fi
  log "installing cached $whl"
  "${PIP[@]}" --no-deps "$whl"
  "${PIP[@]}" addict "packaging" "Pillow" "pyyaml" "yapf" "opencv-python"
  "$P" -c 'import mmcv._ext' || { echo "mmcv was built without ops (mmcv._ext missing)" >&2; exit 1; }
fi
log "mmdet, spconv, tracking and orchestration"
"${PIP[@]}" mmdet nuscenes-devkit numba trimesh pandas spconv cumm hydra-core omegaconf mlflow \
  hydra-joblib-launcher hydra-submitit-launcher matplotlib rich tqdm filelock shapely scikit-image
"${PIP[@]}" --no-deps mmdet3d lyft_dataset_sdk
log "project (editable) + test tools"
"${PIP[@]}" --no-deps -e .
"${PIP[@]}" pytest pytest-timeout nbmake nbformat nbclient ipykernel
"$P" -c 'import mmcv._ext, mmdet3d.models, mmdet3d.datasets, mmdet3d.evaluation, spconv.pytorch, hydra, mlflow, dm3d_exp' \
  || { echo "install check failed: a core import does not work" >&2; exit 1; }
echo "$want" > "$STAMP"
log "done"
