#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a bare device machine, set-up included, in one command.
#
# 1. Here, on a machine that reaches PyPI, from the repository root (fills .whl/, which git ignores):
#        bash benchmarks/gpu_check.sh --prepare
#    The wheels are what the device image lacks (KINDS.md): deepspeed (built here from its sdist,
#    pure Python; its CUDA ops are JIT-built there), hjson, pydantic and its pure dependencies,
#    pydantic-core for CPython 3.12, typing-extensions (used only if the image's is too old for
#    pydantic). Plus .whl/REV, the commit being measured. About 5 MB.
# 2. The device tool, from the repository root:
#        run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#    It installs the missing wheels into /tmp/site (no network there), puts this tree on PYTHONPATH
#    under the trainplan namespace, runs the check with what is left of GPU_CHECK_TOTAL_S (450 s,
#    set-up included) minus time to copy, and leaves in $OUT: gpu_check.md, gpu_check.json,
#    trials.tar.gz (every trial folder, the grid models' config.json, the plain loop's record, the
#    logs) and gpu_check.log.
#    Then copy gpu_check.md and gpu_check.json into benchmarks/results/ and commit them.
#
# Here, the same path runs on the CPU as a rehearsal (GPU_CHECK_TMP keeps its scratch apart):
#     GPU_CHECK_ARGS=--smoke GPU_CHECK_TMP=/tmp/x OUT=/tmp/x/out bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
    set -e
    pyver=${GPU_CHECK_PYVER:-3.12}
    mkdir -p .whl && rm -f .whl/*.whl
    # The versions this tree is tested with here.
    ver() { $PY -c "from importlib.metadata import version; print(version('$1'))"; }
    DS_BUILD_OPS=0 $PY -m pip wheel -q --no-deps --no-build-isolation -w .whl "deepspeed==$(ver deepspeed)"
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "hjson==$(ver hjson)" "pydantic==$(ver pydantic)" "pydantic-core==$(ver pydantic-core)" \
        "annotated-types==$(ver annotated-types)" "typing-inspection==$(ver typing-inspection)" \
        "typing-extensions==$(ver typing-extensions)"
    git describe --always --dirty > .whl/REV 2>/dev/null || echo unknown > .whl/REV
    ls -la .whl && du -sh .whl
    exit 0
fi

T0=$(date +%s)
TMP=${GPU_CHECK_TMP:-/tmp}  # scratch: installed wheels, the tree's import view, trial folders
TOTAL_S=${GPU_CHECK_TOTAL_S:-450}
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
tee_pid=$!
echo "== set-up ($(date -u +%H:%M:%S)); $(nvidia-smi -L 2>/dev/null | head -1)"

# Wheels for what this python lacks: one pip list, then the missing ones only (the image's own
# versions of anything it has stay in charge).
have=$($PY -m pip list --format=freeze 2>/dev/null | tr 'A-Z_' 'a-z-' | cut -d= -f1)
missing=()
for w in .whl/*.whl; do
    [ -e "$w" ] || continue
    name=$(basename "$w" | cut -d- -f1 | tr 'A-Z_' 'a-z-')
    grep -qx "$name" <<<"$have" || missing+=("$w")
done
# pydantic needs typing-extensions >= 4.14.1: the carried one only where the image's is older.
if grep -qx typing-extensions <<<"$have" && ! $PY -c "import sys, importlib.metadata as m
sys.exit(tuple(int(x) for x in m.version('typing_extensions').split('.')[:3]) < (4, 14, 1))"; then
    missing+=(.whl/typing_extensions-*.whl)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$TMP/site" "${missing[@]}" || exit 1
fi
# This tree under its import names (pyproject.toml's package-dir), without setuptools or a build.
rm -rf "$TMP/tp" && mkdir -p "$TMP/tp" && cp -r trainplan "$TMP/tp/"
for p in planner runners search reports; do ln -s "$PWD/$p" "$TMP/tp/trainplan/$p"; done
export PYTHONPATH=$TMP/tp:$TMP/site${PYTHONPATH:+:$PYTHONPATH}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$TMP/torch_extensions} PYTHONUNBUFFERED=1
export GPU_CHECK_REV=$(cat .whl/REV 2>/dev/null || echo unknown)
# DeepSpeed 0.19's JIT builder reads TORCH_CUDA_ARCH_LIST as numbers and fails on an arch with a
# letter suffix ("9.0a", which the device image sets): its ops are built for the plain arch instead.
if [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    export TORCH_CUDA_ARCH_LIST=$(sed -E 's/([0-9])[a-z]+/\1/g' <<<"$TORCH_CUDA_ARCH_LIST")
    echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST (letter suffixes dropped for DeepSpeed's op builder)"
fi
# (From $TMP: python -c/-m put the working folder first on sys.path, and the root's trainplan/ lacks
# the subpackages.)
(cd "$TMP" && $PY -c "import torch, transformers, deepspeed, trainplan.runners; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| deepspeed', deepspeed.__version__)") || exit 1

budget=$(( TOTAL_S - ($(date +%s) - T0) - 20 ))  # 20 s to pack and copy
echo "== check, budget ${budget} s"
rm -rf "$TMP/gpu-check" "$TMP/gpu-check-results"
timeout -k 10 $(( budget + 60 )) $PY benchmarks/gpu_check.py --budget-s "$budget" --work "$TMP/gpu-check" \
    --out "$TMP/gpu-check-results" ${GPU_CHECK_ARGS:-}
code=$?
echo "== gpu_check.py exit $code; copying to $OUT ($(( $(date +%s) - T0 )) s since start)"
cp "$TMP/gpu-check-results/gpu_check.md" "$TMP/gpu-check-results/gpu_check.json" "$OUT/" 2>/dev/null
tar -czf "$OUT/trials.tar.gz" -C "$TMP/gpu-check" trials plain logs specs models 2>/dev/null
ls -la "$OUT"
exec >&- 2>&-
wait "$tee_pid" 2>/dev/null  # the log complete before the device tool collects $OUT
exit $code
