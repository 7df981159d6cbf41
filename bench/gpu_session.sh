#!/usr/bin/env bash
# Issue 25's GPU figures in ONE device call on a lent H100/H200 (about 8 minutes in all).
#
# Here, first (needs pip's network; nothing on the GPU):   bash bench/gpu_session.sh --wheels
#   downloads into .whl/ (ignored by git) the packages the device image lacks: diffusers, pydantic and
#   pydantic-settings with their needs, torchao (FP8).
# Then the device call:  run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=560)
#   1. python -m bench.gpu_session: each configuration the chooser names (bf16+compile+FP8, bf16+compile)
#      against eager bf16 (p50/p95, first call, PSNR / mean pixel difference, the quality gate), then
#      restart-to-ready: two fresh processes on one compile cache.
#   2. python -m bench.gpu, eager bf16 only: the warm standby's takeover with real-size weights (pageable
#      vs pinned), then the memory ceilings up to batch 64 and side 8192 in the 90 s left.
# Everything lands in $OUT (7 files; at most 8 come back): gpu.txt, gpu-session.md/.json, session.log,
# takeover/gpu.md, ceilings/gpu.md, bench-gpu.log. The parts stop at their own time limits (about 540 s).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--wheels" ]]; then
    platforms=()
    for n in 2_17 2_27 2_28 2_34 2_39; do platforms+=(--platform "manylinux_${n}_x86_64"); done
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl \
        diffusers==0.42.1 pydantic==2.13.4 pydantic-core==2.46.4 pydantic-settings==2.14.1 \
        python-dotenv==1.2.2 typing-inspection==0.4.2 annotated-types==0.7.0 torchao==0.18.0
fi

OUT=${OUT:-bench/results/gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-session-site .whl/*.whl \
        && export PYTHONPATH=/tmp/gpu-session-site
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print(torch.__version__)"; } \
    > "$OUT/gpu.txt" 2>&1
timeout 360 python3 -m bench.gpu_session --out "$OUT" > "$OUT/session.log" 2>&1
echo "bench.gpu_session exit $? (124: stopped at its time limit; gpu-session.md keeps what it measured)"
mkdir -p "$OUT/takeover" "$OUT/ceilings"
timeout 75 python3 -m bench.gpu --dtypes bfloat16 --attention sdpa --compile off --runs 2 --warmup 1 \
    --sizes 1024x1024 --no-oom --results-dir "$OUT/takeover" > "$OUT/bench-gpu.log" 2>&1
echo "bench.gpu takeover exit $?"
timeout 90 python3 -m bench.gpu --dtypes bfloat16 --attention sdpa --compile off --runs 1 --warmup 0 \
    --sizes 1024x1024 --no-promotion --oom-max-batch 64 --oom-max-side 8192 --results-dir "$OUT/ceilings" \
    >> "$OUT/bench-gpu.log" 2>&1
echo "bench.gpu ceilings exit $? (124: stopped at its time limit; gpu.md keeps the searches it finished)"
cat "$OUT/gpu-session.md" "$OUT/takeover/gpu.md" "$OUT/ceilings/gpu.md" 2>/dev/null
