#!/usr/bin/env bash
# The GPU rows of the signals issue (#3: clip stage vs forward-only) and the trainer issue (#6: `train` vs
# open_clip_train at DataComp's small protocol), in one call on a lent GPU machine (no network there).
#
#   here, with network:  bash benchmarks/gpu_check.sh prepare
#       downloads the pure-Python and cp312 wheels the device image lacks into .whl/ (git-ignored; ~20 MB):
#       open_clip_torch, ftfy, wcwidth, webdataset 0.2.111 (ours) and 0.2.86 (open_clip_train's pin, in
#       .whl/ref/), braceexpand, imagehash, PyWavelets.
#   on the device:       run(command="bash benchmarks/gpu_check.sh run", carry=[".whl"], timeout_s=600)
#       installs them into /tmp/site and runs, each under its own time limit (STAGE_S, TRAIN_S seconds):
#         stage_bench.py --gpu   ViT-B-32 and ViT-L-14, bf16: forward-only vs the stage vs DataLoader+PIL
#         train_bench.py gpu     ViT-B-32, DataComp's small flags, batch 4096, STEPS steps, each trainer,
#                                then ours without gradient checkpointing (an equivalent option)
#       logs and JSON results go to $OUT (gpu_check.log, stage_gpu.txt, train_gpu.txt).
#
# The device image has torch, torchvision, timm, numpy, pillow, pyarrow, scipy, numba (KINDS.md); versions
# differ from our pins, which is fine for throughput (recorded in the log). Written for an H100/H200 host with
# 16 cores; tune with STEPS, WORKERS, N (images for the stage), STAGE_S, TRAIN_S.
set -uo pipefail
cd "$(dirname "$0")/.."

WHL=.whl
PY312=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

prepare() {
  set -e
  grep -qx '/.whl/' .gitignore || echo '/.whl/' >> .gitignore
  rm -rf "$WHL" && mkdir -p "$WHL/ref"
  python3 -m pip download --quiet --no-deps "${PY312[@]}" -d "$WHL" \
    open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13 webdataset==0.2.111 braceexpand==0.1.7 \
    imagehash==4.3.2 PyWavelets==1.8.0
  python3 -m pip download --quiet --no-deps "${PY312[@]}" -d "$WHL/ref" webdataset==0.2.86
  du -sh "$WHL"; ls "$WHL" "$WHL/ref"
}

run() {
  local out="${OUT:-benchmarks/_work/gpu_check}"
  mkdir -p "$out"
  exec > >(tee "$out/gpu_check.log") 2>&1
  export PYTHONUNBUFFERED=1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, open_clip, webdataset, PIL, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'tv', torchvision.__version__, 'open_clip', open_clip.__version__, 'wds', webdataset.__version__, 'pillow', PIL.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
  nproc; df -h /dev/shm | tail -1  # loader batches pass through it: ~17 GB at 14 workers, batch 4096, uint8
  local work=/tmp/gpu_check
  timeout "${STAGE_S:-170}" python3 benchmarks/stage_bench.py --gpu --n "${N:-20000}" --unique 2000 \
      --workers "${WORKERS:-14}" --precision bf16 --batch-size 256 --work "$work/stage" 2>&1 | tee "$out/stage_gpu.txt"
  echo "stage_bench exit: ${PIPESTATUS[0]}"
  timeout "${TRAIN_S:-380}" python3 benchmarks/train_bench.py gpu --steps "${STEPS:-60}" --workers "${WORKERS:-14}" \
      --shards 32 --per-shard 1000 --no-checkpointing --ref-wheels "$WHL/ref" --work "$work/train" 2>&1 \
      | grep -v "Train Epoch" | tail -60 | tee "$out/train_gpu.txt"
  echo "train_bench exit: ${PIPESTATUS[0]}"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash benchmarks/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
