#!/usr/bin/env bash
# What only a GPU shows for the fused optimizer steps (issue #15): parity of the Triton kernels with the reference
# loop on CUDA, and the roofline table timed with CUDA events. Run from the repository root on a machine with a
# CUDA device and torch + triton installed; the results go to $OUT (default benchmarks/results/cuda).
#
#   bash benchmarks/cuda_check.sh                     # parity, then the eight optimizers' roofline rows
#   ONLY="ldadam came" SKIP_PARITY=1 bash benchmarks/cuda_check.sh
#
# The parameter set is the CPU benchmark's Llama layout at 4 layers x hidden 2048 x intermediate 5504 (201M
# parameters, 5.6 GB for one fused AdamW step): large enough that a step is memory-bound rather than launch-bound.
set -u
out=${OUT:-benchmarks/results/cuda}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$out/gpu.txt"
$python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"
if [ -z "${SKIP_PARITY:-}" ]; then
  # -v names each case as it finishes, so a run cut short by a time limit still says which ran and how
  timeout "${PARITY_SECONDS:-240}" $python -m pytest -v --tb=short -rfxX -p no:cacheprovider tests/optim/test_fused_cuda.py \
    2>&1 | tee "$out/parity_cuda.log"
fi
timeout "${ROOFLINE_SECONDS:-330}" $python benchmarks/optim_step.py --roofline --device cuda \
  --layers 4 --hidden 2048 --intermediate 5504 --rounds 5 --steps 10 \
  --only ${ONLY:-ldadam came adam_mini lion adabelief adabound yogi hybrid_adam_sgd} \
  --json "$out/optim_step_roofline_cuda.json" 2>&1 | tee "$out/roofline_cuda.log"
