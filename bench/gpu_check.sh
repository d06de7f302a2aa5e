#!/usr/bin/env bash
# What needs a CUDA GPU, in stages, each under its own time limit (`timeout -k`: a stage that ignores
# SIGTERM is killed 10 s later) so one slow stage cannot eat the others. Results and one log go to $1
# (default bench/results); Triton's compile cache is shared between the stages.
#
#     bash bench/gpu_check.sh [OUT] [STAGE...]
#
# The two calls of a 15-minute loan (a device call runs at most 600 s; each adds up to under 560 s):
#     bash bench/gpu_check.sh OUT install fair     # 1st: `python -m bench.fair --plan` says what (<= 480 s)
#     bash bench/gpu_check.sh OUT install tests    # 2nd: the GPU tests (150 s)
# The tests stage's measurements (step times of the NCCL test, ...) go to OUT/gpu_tests.jsonl.
# Other stages: fair-amp fair-nhwc fair-nhwc-pointers (fair-nhwc's convs with TMA descriptors off, to compare)
# demo (`fusegraph demo --task mnist`'s GPU recipe to 97%, about a minute) blocks training models tune
# tune-conv tune-conv-grad profile.
# `install` puts the project on the bare GPU machine (no network there): an editable install without
# dependencies or build isolation, so that entry points (the torch.compile backend) exist.
set -u
out="${1:-bench/results}"
shift || true
stages="${*:-install fair}"
mkdir -p "$out"
log="$out/gpu_check.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/fusegraph-triton-cache}"
unset TRITON_INTERPRET

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$log"
    local start=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start))s" | tee -a "$log"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__,
'triton', triton.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee -a "$log"

for name in $stages; do
    case $name in
        install) stage install 60 python3 -m pip install --quiet --no-deps --no-build-isolation --no-index -e . ;;
        fair) stage fair 490 python3 -m bench.fair --budget 480 --profile --out "$out" ;;
        fair-amp) stage fair-amp 490 python3 -m bench.fair --budget 480 --dtype bfloat16 --out "$out" \
                  --rows 'cifar_resnet training step b128' 'cifar_cnn training step b128' ;;
        fair-nhwc) stage fair-nhwc 490 python3 -m bench.fair --budget 480 --dtype float16 --memory-format channels_last \
                  --out "$out" --rows "conv3x3 64ch 56x56 b32" "conv3x3 256ch 14x14 b128" \
                  "vgg conv3x3+relu+pool 64ch 112x112 b32" "cifar_cnn forward b128" ;;
        fair-nhwc-pointers) stage fair-nhwc-pointers 490 env FUSEGRAPH_TENSOR_DESCRIPTORS=0 python3 -m bench.fair \
                  --budget 480 --dtype float16 --memory-format channels_last --out "$out/pointers" \
                  --rows "conv3x3 64ch 56x56 b32" "conv3x3 256ch 14x14 b128" ;;  # the same rows without TMA
        tune-conv) stage tune-conv 300 python3 -m bench.tune_gpu --sweeps conv --budget 240 --out "$out" ;;
        tune-conv-grad) stage tune-conv-grad 300 python3 -m bench.tune_gpu --sweeps conv_grad --budget 240 --out "$out" ;;
        blocks) stage blocks 100 python3 -m bench.bench_blocks --out "$out" ;;
        tests) stage tests 150 env FUSEGRAPH_TEST_GPU=1 FUSEGRAPH_GPU_RECORD="$out/gpu_tests.jsonl" python3 -m pytest \
                  -q -p no:cacheprovider -n 8 tests/runtime/test_gpu.py -k "not mnist_demo" ;;
        demo) stage demo 120 env FUSEGRAPH_TEST_GPU=1 FUSEGRAPH_GPU_RECORD="$out/gpu_tests.jsonl" python3 -m pytest \
                  -q -p no:cacheprovider tests/runtime/test_gpu.py -k mnist_demo ;;
        training) stage training 150 python3 -m bench.bench_training --batch 256 --out "$out" ;;
        models) stage models 150 python3 -m bench.bench_models --batch 256 --out "$out" ;;
        tune) stage tune 210 python3 -m bench.tune_gpu --budget 150 --out "$out" ;;
        profile) stage profile 150 python3 -m bench.profile_gpu --batch 256 --out "$out" ;;
        *) echo "unknown stage $name" | tee -a "$log" ;;
    esac
done
