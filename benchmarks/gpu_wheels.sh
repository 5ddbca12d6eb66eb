#!/usr/bin/env bash
# Recreate .whl/: the wheels that benchmarks/gpu_check.sh installs offline on the GPU machine.
#
# usage: bash benchmarks/gpu_wheels.sh [DEST]          (DEST defaults to .whl in the repository root)
#   GPU_WHEELS_PYTHON      interpreter whose installed versions are the pins (default .venv/bin/python)
#   GPU_WHEELS_PY_VERSION  target CPython version (default 3.12, the GPU image's python3)
#
# The GPU image has Python 3.12 with torch, triton, numpy and pytest but no dask, distributed or
# zarr, and no network.  This downloads CPython 3.12 manylinux x86_64 wheels of dask[array],
# distributed, zarr, pytest and numpy and of every dependency they have, pinned to the versions
# installed in .venv (so the GPU run uses what the tests here use), writes .whl/requirements.txt
# (what gpu_check.sh asks pip for), and stages the shared benchmark inputs (../shared/bench:
# workloads.json and its make_inputs.py, which do not travel with the repository) in .whl/bench.
# .whl/ is git-ignored; name it in the device tool's `carry`.  Needs the package index (run it here,
# not on the GPU machine).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
DEST=${1:-.whl}
PY=${GPU_WHEELS_PYTHON:-.venv/bin/python}
PYVER=${GPU_WHEELS_PY_VERSION:-3.12}
ABI=cp${PYVER/./}
TOP=(dask distributed zarr pytest numpy)

mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# pins: every distribution installed in the pinning interpreter except torch and editable installs
"$PY" -m pip freeze --exclude-editable | grep -v -i -E '^(torch|#|-e )' >"$tmp/constraints.txt"
pin() { grep -i -E "^$1==" "$tmp/constraints.txt" | head -1; }
{
    echo "# written by benchmarks/gpu_wheels.sh: what gpu_check.sh installs from this folder (pip --no-index)"
    echo "dask[array]==$(pin dask | cut -d= -f3)"
    pin distributed
    pin zarr
    echo "# unpinned: the image's own pytest and numpy are kept (its pytest plugins match them)"
    echo "pytest"
    echo "numpy"
} >"$tmp/requirements.txt"
reqs=("dask[array]" "$(pin distributed)" "$(pin zarr)" "$(pin pytest)" "$(pin numpy)" "$(pin dask)")
for r in "${reqs[@]}"; do [[ -n $r ]] || { echo "gpu_wheels: a pin is missing in $PY's environment" >&2; exit 1; }; done

rm -f "$DEST"/*.whl
"$PY" -m pip download -q --only-binary=:all: --implementation cp --python-version "$PYVER" --abi "$ABI" --abi abi3 \
    --abi none --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux1_x86_64 \
    --platform any -c "$tmp/constraints.txt" -d "$DEST" "${reqs[@]}"
cp "$tmp/requirements.txt" "$DEST/requirements.txt"

# the benchmark inputs' recipe, from the shared folder beside the checkout (it does not travel)
for d in "${GPU_WHEELS_BENCH:-}" "$REPO/shared/bench" "$REPO/../shared/bench"; do
    if [[ -n $d && -f $d/workloads.json && -f $d/make_inputs.py ]]; then
        mkdir -p "$DEST/bench"
        cp "$d/workloads.json" "$d/make_inputs.py" "$DEST/bench/"
        echo "gpu_wheels: staged $d -> $DEST/bench"
        break
    fi
done

ls -1 "$DEST"/*.whl | sed 's|.*/||'
echo "gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
