#!/usr/bin/env bash
# The GPU check: one script for a bare GPU machine with no network.
#
# usage: bash benchmarks/gpu_check.sh        (from any directory; the repository is this script's parent)
#
# Stages, each under its own time limit, all within GPU_CHECK_BUDGET seconds (default 450):
#   install     a virtual environment over the machine's python3 (its torch and triton), with what the
#               image lacks (dask, distributed, zarr and their dependencies) from the wheels in .whl/,
#               offline (pip --no-index); the project itself runs from the checkout (PYTHONPATH)
#   env         python, torch, CUDA and triton versions, the GPU's name
#   gpu_kernel  benchmarks/gpu_kernel.py: Gevals/s of the whole image by tile size, of the fused sum
#               alone, of the eager path and of this machine's CPU; an Eiger 16M's GPU memory
#   pytest_gpu  pytest -m gpu (tests/test_gpu.py: CUDA against the CPU kernel and the golden images,
#               fused against eager, tiling, c-parity, noise, a Dask GPU worker writing a store)
#   golden      every golden case the CPU tests check, on the device, float64 (1e-5) and float32 (1e-3)
#   fused       the compiled (torch.compile, Triton) orientation sum against the eager path on the device
#   bench       benchmarks/run_workloads.py --device cuda --compile on,off, workload by workload (only
#               when named in GPU_CHECK_STAGES)
# Results: $OUT/gpu_check.json (every stage's status, counts, per-case errors, Mevals/s) and
# $OUT/gpu_check.log; OUT defaults to ./gpu_check_out.  It exits 0 even when a stage fails: read
# the JSON ("ok", and each stage's "status": ok | fail | timeout | skipped).
#
# Prepare here first (needs the package index): bash benchmarks/gpu_wheels.sh   (fills .whl/)
#
# Knobs (environment):
#   GPU_CHECK_DEVICE  cuda (default) or cpu: cpu runs every stage on the CPU (a check of the script
#                     itself on a machine without a GPU)
#   GPU_CHECK_QUICK   1: a few golden cases, one fused case, one cropped workload
#   GPU_CHECK_BUDGET  seconds for the whole run (default 450)
#   GPU_CHECK_PYTHON  the interpreter holding torch (default python3)
#   GPU_CHECK_WHEELS  the wheel folder (default .whl)
#   GPU_CHECK_BENCH   folder with workloads.json and make_inputs.py (default: shared/bench, ../shared/bench
#                     or .whl/bench, the first that exists)
#   GPU_CHECK_STAGES  stages to run, comma-separated (default env,gpu_kernel,pytest_gpu,golden,fused)
#   GPU_CHECK_KERNEL_FLAGS  gpu_kernel.py's flags instead of the default
#                     (--eiger --whole-process --profile --cpu-repeat 2)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 0
DEVICE=${GPU_CHECK_DEVICE:-cuda}
QUICK=${GPU_CHECK_QUICK:-0}
BUDGET=${GPU_CHECK_BUDGET:-450}
PY=${GPU_CHECK_PYTHON:-python3}
WHEELS=$(cd "${GPU_CHECK_WHEELS:-$REPO/.whl}" 2>/dev/null && pwd || echo "${GPU_CHECK_WHEELS:-$REPO/.whl}")
STAGES=",${GPU_CHECK_STAGES:-env,gpu_kernel,pytest_gpu,golden,fused},"
OUTDIR=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
VENV=$WORK/venv
LOG=$OUTDIR/gpu_check.log
: >"$LOG"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor  # cold compilations: compile times as a first run sees them
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
QFLAG=()
[[ $QUICK == 1 ]] && QFLAG=(--quick)
HELPER="$REPO/benchmarks/gpu_check.py"

say() { echo "[gpu_check $(($(date +%s) - START))s] $*" | tee -a "$LOG"; }

# the command as given, with the knobs that were set
COMMAND="bash benchmarks/gpu_check.sh"
for v in GPU_CHECK_DEVICE GPU_CHECK_QUICK GPU_CHECK_BUDGET GPU_CHECK_STAGES GPU_CHECK_KERNEL_FLAGS; do
    [[ -n ${!v:-} ]] && COMMAND="$v='${!v}' $COMMAND"
done
"$PY" - "$WORK/meta.json" "$DEVICE" "$QUICK" "$BUDGET" "$START" "$COMMAND" <<'EOF' || echo '{}' >"$WORK/meta.json"
import json, platform, socket, subprocess, sys, time
out, device, quick, budget, start, command = sys.argv[1:]
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip() != ""
except OSError:
    commit, dirty = None, None
json.dump({"tool": "benchmarks/gpu_check.sh", "command": command, "device": device, "quick": quick == "1", "budget_s": int(budget),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(int(start))), "start_epoch": int(start),
           "host": socket.gethostname(), "machine": platform.machine(), "commit": commit, "dirty": dirty},
          open(out, "w"))
EOF

# stage NAME CAP CMD...: run CMD under min(CAP, what is left of the budget less a reserve for the
# merge); its output goes to the log (and the screen); one line per stage to stages.tsv
stage() {
    local name=$1 cap=$2 left limit rc t0 status
    shift 2
    left=$((DEADLINE - $(date +%s) - 15))
    limit=$((cap < left ? cap : left))
    if ((limit < 10)); then
        printf '%s\t\t0\t%s\tskipped\n' "$name" "$limit" >>"$WORK/stages.tsv"
        say "$name: skipped (budget spent)"
        return
    fi
    say "$name: start (limit ${limit}s)"
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    rc=$?
    cat "$WORK/$name.log" >>"$LOG"
    tail -n 25 "$WORK/$name.log"
    case $rc in
        0) status=ok ;;
        124 | 137) status=timeout ;;
        *) status=fail ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" "$limit" "$status" >>"$WORK/stages.tsv"
    say "$name: $status (rc $rc, $(($(date +%s) - t0))s)"
}

# ------------------------------------------------------------------------------- install
# A venv over the machine's python (see gpu_check.py install): what the image lacks comes from .whl
# alone (pip --no-index); the project itself runs from the checkout (PYTHONPATH).
stage install 120 "$PY" "$HELPER" install --device "$DEVICE" --wheels "$WHEELS" --venv "$VENV" \
    --out "$WORK/install.json"
if [[ $(tail -n 1 "$WORK/stages.tsv" | cut -f5) == ok ]]; then
    PYBIN=$VENV/bin/python
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
else
    say "install: no venv; every wheel into a folder first on PYTHONPATH instead (pip --target)"
    sed -i '$ d' "$WORK/stages.tsv"
    mv "$WORK/install.log" "$WORK/install_venv.log"
    stage install 90 "$PY" "$HELPER" install --target --device "$DEVICE" --wheels "$WHEELS" --venv "$WORK/site" \
        --out "$WORK/install.json"
    cat "$WORK/install_venv.log" >>"$WORK/install.log"
    PYBIN=$PY
    export PYTHONPATH=$WORK/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
fi

# ------------------------------------------------------------------------------- the checks
want() { [[ $STAGES == *",$1,"* ]]; }
want env && stage env 60 "$PYBIN" "$HELPER" env --device "$DEVICE" --out "$WORK/env.json"

BENCH=""
for d in "${GPU_CHECK_BENCH:-}" "$REPO/shared/bench" "$REPO/../shared/bench" "$WHEELS/bench"; do
    if [[ -n $d && -f $d/workloads.json && -f $d/make_inputs.py ]]; then BENCH=$d; break; fi
done

if want gpu_kernel; then
    KFLAG=(--eiger --whole-process --profile --cpu-repeat 2)
    [[ $QUICK == 1 ]] && KFLAG=(--only mosaic-rotation --tiles 256,1024 --repeat 1 --cpu-repeat 1)
    # shellcheck disable=SC2206  # the knob is a list of flags
    [[ -n ${GPU_CHECK_KERNEL_FLAGS:-} ]] && KFLAG=($GPU_CHECK_KERNEL_FLAGS)
    kleft=$((DEADLINE - $(date +%s) - 15))
    kcap=$((kleft < 200 ? kleft : 200))
    stage gpu_kernel 200 "$PYBIN" "$REPO/benchmarks/gpu_kernel.py" --device "$DEVICE" \
        --workloads "$BENCH/workloads.json" --out "$WORK/gpu_kernel.json" --deadline-s $((kcap - 25)) \
        --dump "$OUTDIR" "${KFLAG[@]}"
fi

if want pytest_gpu; then
    # the gpu tests skip themselves where torch sees no CUDA device (GPU_CHECK_DEVICE=cpu: all skipped)
    # the files that use the marker (collecting every test module would need every test's imports)
    mapfile -t GPU_TESTS < <(grep -l -E 'mark\.gpu' tests/test_*.py)
    ((${#GPU_TESTS[@]})) || GPU_TESTS=(tests)
    # no plugin autoload: the image's pytest plugins (benchmark, cov, xdist...) play no part here
    PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 stage pytest_gpu 120 "$PYBIN" -m pytest -m gpu -v -p no:cacheprovider \
        --continue-on-collection-errors --junitxml="$WORK/junit.xml" "${GPU_TESTS[@]}"
    "$PY" "$HELPER" junit --xml "$WORK/junit.xml" --log "$WORK/pytest_gpu.log" --out "$WORK/pytest_gpu.json"
fi

want golden && stage golden 150 "$PYBIN" "$HELPER" golden --device "$DEVICE" --out "$WORK/golden.json" "${QFLAG[@]}"

want fused && stage fused 60 "$PYBIN" "$HELPER" fused --device "$DEVICE" --out "$WORK/fused.json" "${QFLAG[@]}"

if want bench; then
    if [[ -z $BENCH ]]; then
        echo "no workloads.json + make_inputs.py (shared/bench, ../shared/bench or .whl/bench)" >"$WORK/bench.log"
        printf 'bench\t\t0\t0\tfail\n' >>"$WORK/stages.tsv"
        say "bench: fail (no workloads.json; run benchmarks/gpu_wheels.sh to stage it in .whl/bench)"
    else
        left=$((DEADLINE - $(date +%s) - 25))
        BFLAG=()
        [[ $QUICK == 1 ]] && BFLAG=(--quick --crop 64 --repeat 1)
        stage bench 600 "$PYBIN" "$HELPER" bench --device "$DEVICE" --workloads "$BENCH/workloads.json" \
            --compile on,off --dtypes float64,float32 --deadline-s "$left" --out "$WORK/bench.json" "${BFLAG[@]}"
    fi
fi

# ------------------------------------------------------------------------------- results
"$PY" "$HELPER" merge --work "$WORK" --out "$OUTDIR/gpu_check.json" --card-dir "$OUTDIR" 2>&1 | tee -a "$LOG"
[[ -s $OUTDIR/gpu_check.json ]] || echo '{"ok": false, "error": "merge failed"}' >"$OUTDIR/gpu_check.json"
[[ -f $WORK/junit.xml ]] && cp "$WORK/junit.xml" "$OUTDIR/pytest_gpu_junit.xml"
rm -rf "$WORK"
exit 0
