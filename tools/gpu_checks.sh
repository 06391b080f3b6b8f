#!/usr/bin/env bash
# Every GPU check in one call: the kernel and visible-only tests on the real GPU (compiled Triton,
# no interpreter), then the benchmark targets, then the loader feeding the pretraining step.
# Results go to $OUT (default output/gpu_checks): *.txt logs and *.json benchmark rows. Exit
# status 1 if any step failed; later steps still run.
#
#   OUT=/tmp/gpu bash tools/gpu_checks.sh            # everything (~10 min on an H100, + the loader)
#   bash tools/gpu_checks.sh quick                   # tests + kernel micro-benchmark only
#   bash tools/gpu_checks.sh loader                  # only the loader feeding the pretraining step
#
# An offline GPU image may lack pytest and this project's dependencies: put their wheels (pytest,
# pluggy, iniconfig, packaging and the others) in .whl; this script installs .whl into .site when
# it exists and puts .site and the checkout on PYTHONPATH, so the tools import the package from
# here without an install. The loader step decodes videos: the GPU image has neither PyAV nor
# decord, so put an av (and, if wanted, a decord) wheel for the image's Python in .whl too; without
# PyAV the step is reported as skipped.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-output/gpu_checks}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl
fi
export PYTHONPATH=$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}
unset TRITON_INTERPRET
status=0

step() {  # step NAME CMD...: run CMD, log to $OUT/NAME.txt, remember failures
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "== $name FAILED (exit $rc)"
        status=1
    fi
}

$PY -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" \
    | tee "$OUT/env.txt"

BENCH="$PY tools/benchmark.py"
CLIP="--frames 16 --img-size 224 --batch 32 --precision bf16"

loader_check() {  # 64 procedural videos at 320x426 (short side 320), 16 workers, the recipe's num_sample 2
    if ! $PY -c "import av" 2>/dev/null; then
        echo "== loader SKIPPED: PyAV is not importable (see the header of this script)" | tee "$OUT/loader.txt"
        status=1
        return
    fi
    local data=$OUT/loader_data reader=pyav
    $PY -c "import decord" 2>/dev/null && reader=decord
    [ -f "$data/k400/train.csv" ] || step loader_data $PY tools/make_synthetic_dataset.py "$data" \
        --layouts k400 --num-classes 8 --train 8 --val 1 --test 1 --frames 96 --height 320 --width 426 --workers 16
    step loader $BENCH loader --model videoconvmae_base_patch16 $CLIP --mask-ratio 0.9 --visible-only on \
        --dwconv-backend triton --list "$data/k400/train.csv" --data-root "$data/k400" --reader $reader --workers 16 \
        --num-sample 2 --steps 20 --warmup 3 --json "$OUT/loader.json"
}
if [ "${1:-}" = loader ]; then
    loader_check
    exit $status
fi

if $PY -c "import pytest" 2>/dev/null; then
    step tests $PY -m pytest -q -p no:cacheprovider tests/models/test_kernel_triton.py \
        tests/models/test_dwconv.py tests/models/test_visible.py
else
    echo "== tests SKIPPED: pytest is not importable (see the header of this script)" | tee "$OUT/tests.txt"
    status=1
fi

step dwconv_bf16 $BENCH dwconv --shape 32 256 8 56 56 --kernel-size 3 5 5 --precision bf16 --visible 0.1 \
    --json "$OUT/dwconv_bf16.json"
step dwconv_fp32 $BENCH dwconv --shape 32 256 8 56 56 --kernel-size 3 5 5 --precision fp32 --visible 0.1 \
    --json "$OUT/dwconv_fp32.json"
step dwconv_2d_bf16 $BENCH dwconv --shape 64 256 56 56 --kernel-size 5 5 --precision bf16 --visible 0.25 \
    --json "$OUT/dwconv_2d_bf16.json"
[ "${1:-}" = quick ] && exit $status

step pretrain $BENCH train --model videoconvmae_base_patch16 $CLIP --mask-ratio 0.9 \
    --visible-only on --dwconv-backend triton --json "$OUT/pretrain.json"
step pretrain_ablation $BENCH train --model videoconvmae_base_patch16 $CLIP --mask-ratio 0.9 --steps 5 \
    --visible-only on off --dwconv-backend triton torch --json "$OUT/pretrain_ablation.json"
step pretrain_decoder_mask $BENCH decoder-mask --model videoconvmae_base_patch16 $CLIP --mask-ratio 0.9 \
    --visible-only on --dwconv-backend triton --decoder-mask-ratio 0.5 --steps 5 --rounds 5 --json "$OUT/pretrain_decoder_mask.json"
step pretrain_compile $BENCH train --model videoconvmae_base_patch16 $CLIP --mask-ratio 0.9 \
    --visible-only on --dwconv-backend triton --compile on --json "$OUT/pretrain_compile.json"
step finetune $BENCH train --model videoconvvit_base_patch16 $CLIP --dwconv-backend triton torch \
    --json "$OUT/finetune.json"
step finetune_compile $BENCH train --model videoconvvit_base_patch16 $CLIP --dwconv-backend triton --compile on \
    --json "$OUT/finetune_compile.json"
loader_check
exit $status
