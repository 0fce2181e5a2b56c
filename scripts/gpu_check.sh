#!/usr/bin/env bash
# The project's GPU checks in one go, on a bare CUDA machine that has its own Python and PyTorch (under 8 minutes on
# one H100/H200): the CUDA tests, the GPU benchmark section, and the CIFAR-10 speed recipe against airbench94.
#
#   scripts/gpu_check.sh [WHEELS_DIR] [DATA_DIR]       (or WHEELS_DIR=... DATA_DIR=... scripts/gpu_check.sh)
#
# WHEELS_DIR (default .whl): wheels of what the machine lacks (hydra-core, omegaconf, antlr4-python3-runtime,
# airbench), installed with pip --no-index --no-deps into SITE_DIR (default /tmp/site), which goes first on
# PYTHONPATH; the project runs from this checkout. DATA_DIR (default ../shared/data): holds cifar-10-batches-py/.
# A missing folder, a package that stays missing or no CUDA device skips what needs it, with a line saying so.
# With OUT set, $OUT gets gpu_check.json (each step's status, seconds and figures, what was skipped), gpu_check.log,
# and the steps' own files (cuda_tests.xml, benchmark_gpu.json, airbench.json). Exit status 1 when a step failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
absolute() { case $1 in /* | "") echo "$1" ;; *) echo "$PWD/$1" ;; esac }  # from the caller's directory
WHEELS_DIR="$(absolute "${1:-${WHEELS_DIR:-$ROOT/.whl}}")"
DATA_DIR="$(absolute "${2:-${DATA_DIR:-$ROOT/../shared/data}}")"
OUT="$(absolute "${OUT:-}")" SITE_DIR="$(absolute "${SITE_DIR:-/tmp/site}")"
cd "$ROOT" || exit 1
if [ -z "${PYTHON:-}" ]; then  # python3, or this checkout's .venv where python3 has no torch (a CPU machine)
    PYTHON=python3
    if ! python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is None)' 2>/dev/null &&
        [ -x "$ROOT/.venv/bin/python" ]; then
        PYTHON="$ROOT/.venv/bin/python"
    fi
fi
TESTS_S="${GPU_CHECK_TESTS_S:-90}" BENCH_S="${GPU_CHECK_BENCH_S:-240}" RECIPE_S="${GPU_CHECK_RECIPE_S:-150}"
export PYTHONUNBUFFERED=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

if [ -n "$OUT" ]; then
    mkdir -p "$OUT" && WORK="$OUT" LOG="$OUT/gpu_check.log" || exit 1
    : >"$LOG"
else
    WORK="$(mktemp -d -t gpu-check-XXXXXX)" LOG=/dev/null
fi
STEPS="$WORK/.gpu_check_steps.tsv"
: >"$STEPS"

say() { echo "$*" | tee -a "$LOG"; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$STEPS"; }  # step, status, rc, seconds, note
skip() { say "skipped: $2 ($3)"; record "$1" skipped - 0 "$3"; }  # skip STEP WHAT WHY

run_step() {  # run_step STEP SECONDS COMMAND...: under `timeout`, output to the console and the log
    local step=$1 limit=$2 start=$SECONDS rc status
    shift 2
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    case $rc in
        0) status=ok ;;
        124 | 137) status=timeout; say "gpu_check: $step ran past its $limit s" ;;
        *) status=failed ;;
    esac
    record "$step" "$status" "$rc" $((SECONDS - start)) "$*"
    return "$rc"
}

finish() {  # the summary table, $OUT/gpu_check.json, and the exit status
    say "== summary ($SECONDS s)"
    while IFS=$'\t' read -r step status rc seconds note; do
        say "$(printf '  %-10s %-8s %5s s  %s' "$step" "$status" "$seconds" "${note:0:100}")"
    done <"$STEPS"
    if [ -n "$OUT" ]; then
        "$PYTHON" - "$WORK" "$SECONDS" "$WHEELS_DIR" "$DATA_DIR" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
work, seconds, wheels, data = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
steps = {}
for line in (work / ".gpu_check_steps.tsv").read_text().splitlines():
    step, status, rc, secs, note = line.split("\t")
    steps[step] = {"status": status, "rc": None if rc == "-" else int(rc), "seconds": int(secs), "note": note}
def read(name):
    path = work / name
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError as err:
        return {"unreadable": str(err)}
if (work / "cuda_tests.xml").is_file():
    suite = ET.parse(work / "cuda_tests.xml").getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    steps.setdefault("tests", {})["figures"] = counts | {"passed": counts["tests"] - counts["failures"]
                                                         - counts["errors"] - counts["skipped"]}
bench = read("benchmark_gpu.json")
if bench is not None:
    steps.setdefault("benchmark", {})["figures"] = bench
airbench = read("airbench.json")
if airbench is not None:
    steps.setdefault("recipe", {})["figures"] = airbench
report = {"seconds": seconds, "wheels_dir": wheels, "data_dir": data, "steps": steps,
          "skipped": {step: s["note"] for step, s in steps.items() if s.get("status") == "skipped"}}
(work / "gpu_check.json").write_text(json.dumps(report, indent=2))
print(f"wrote {work / 'gpu_check.json'}")
EOF
    fi
    rm -f "$STEPS"
    [ -n "$OUT" ] || rm -rf "$WORK"
    exit "$FAILED"
}
FAILED=0

say "== gpu_check: $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git'), $("$PYTHON" --version 2>&1)"
say "   python: $PYTHON   wheels: $WHEELS_DIR   data: $DATA_DIR   out: ${OUT:-(not set)}"

# ---- 1. the wheels the machine lacks, into SITE_DIR
say "== 1/5 installing wheels"
shopt -s nullglob
wheels=("$WHEELS_DIR"/*.whl)
if [ ! -d "$WHEELS_DIR" ]; then
    skip wheels "installing wheels" "no folder $WHEELS_DIR"
elif [ ${#wheels[@]} -eq 0 ]; then
    skip wheels "installing wheels" "no .whl files in $WHEELS_DIR"
else
    run_step wheels 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE_DIR" "${wheels[@]}" && say "installed ${#wheels[@]} wheels into $SITE_DIR" || FAILED=1
    export PYTHONPATH="$SITE_DIR${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$ROOT"  # the project from this checkout

HYDRA=1
if ! hydra_line="$("$PYTHON" -c 'import hydra, omegaconf; print(f"hydra {hydra.__version__}, omegaconf {omegaconf.__version__}")' 2>&1)"; then
    HYDRA=0
    say "hydra: not importable (${hydra_line##*$'\n'}): the CUDA tests and the GPU benchmark will be skipped"
else
    say "$hydra_line"
fi

# ---- 2. a CUDA device: the one torch import before the checks
say "== 2/5 CUDA device"
if ! cuda_line="$("$PYTHON" -c 'import torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}): " + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"))
raise SystemExit(0 if torch.cuda.is_available() else 3)' 2>&1)"; then
    say "${cuda_line##*$'\n'}"
    if [[ $cuda_line == *"no CUDA device"* ]]; then
        reason="no CUDA device" needs="a CUDA device (torch.cuda.is_available() is False)"
    else
        reason="no PyTorch" needs="PyTorch ($PYTHON -c 'import torch' failed)"
    fi
    say "gpu_check: needs $needs: skipped the CUDA tests, the GPU benchmark and the speed recipe"
    for step in cuda tests benchmark recipe; do record "$step" skipped - 0 "$reason"; done
    finish
fi
say "$cuda_line"
record cuda ok 0 0 "$cuda_line"

# ---- 3. the CUDA tests (marked `cuda`), one process (-p no:xdist); addopts cleared: it passes xdist's -n
say "== 3/5 CUDA tests (pytest -m cuda)"
mapfile -t test_files < <(grep -rlE 'mark\.cuda' tests --include='test_*.py' | sort)
if [ "$HYDRA" -eq 0 ]; then
    skip tests "the CUDA tests" "hydra is not importable"
elif [ ${#test_files[@]} -eq 0 ]; then
    skip tests "the CUDA tests" "no test file marks a test cuda"
else
    # the files that hold cuda tests only: collecting all of tests/ would import what this machine may lack (optuna)
    run_step tests "$TESTS_S" "$PYTHON" -m pytest -q -p no:xdist -o addopts="" -ra -m "cuda and not slow" \
        --junitxml "$WORK/cuda_tests.xml" "${test_files[@]}" || FAILED=1
fi

# ---- 4. the GPU benchmark section
say "== 4/5 GPU benchmark (scripts/benchmark.py --only gpu)"
if [ "$HYDRA" -eq 0 ]; then
    skip benchmark "the GPU benchmark" "hydra is not importable"
else
    [ -d "$DATA_DIR/cifar-10-batches-py" ] ||
        say "note: no cifar-10-batches-py in $DATA_DIR: the benchmark's CIFAR-10 data-path table is skipped"
    run_step benchmark "$BENCH_S" "$PYTHON" scripts/benchmark.py --only gpu --rounds 3 --data "$DATA_DIR" \
        --json "$WORK/benchmark_gpu.json" || FAILED=1
fi

# ---- 5. the speed recipe against airbench94 on the same data
say "== 5/5 speed recipe and airbench94 (scripts/bench_airbench.py)"
if [ ! -d "$DATA_DIR/cifar-10-batches-py" ]; then
    skip recipe "the speed recipe and the airbench reference" "no cifar-10-batches-py in $DATA_DIR"
else
    run_step recipe "$RECIPE_S" "$PYTHON" scripts/bench_airbench.py --data "$DATA_DIR" --wheels "$WHEELS_DIR" \
        --timeout 100 --json "$WORK/airbench.json" || FAILED=1
fi

finish
