"""Generation and export under FSDP2 with two CPU processes (gloo): ranks holding prompts of different lengths, and
a rank whose answers end after one token while the other's run on, neither hang nor change the answers; the full
state dict assembled from the shards on rank 0 is the unsharded model's."""

import json
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import LlamaConfig, LlamaForCausalLM

from modules.distributed import generate_across_ranks
from modules.generation import generate

MAX_NEW = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def cases(model: LlamaForCausalLM) -> list[dict]:
    """Prompt lists with the greedy answers of one process. Case 1: rank 1's only prompt ends after one token (its
    first greedy token is made the EOS) while rank 0's runs all ``MAX_NEW`` steps: unequal decoding steps. Case 2:
    five prompts of lengths 2-14 over two ranks in batches of two: unequal slices and generate-call counts."""
    long_prompt, short_prompt = list(range(3, 17)), [5, 6]
    with torch.no_grad():
        first = int(model(torch.tensor([short_prompt])).logits[0, -1].argmax())
    run_on = generate(model, [long_prompt], eos_token_id=first, pad_token_id=0, max_new_tokens=MAX_NEW)[0]
    assert not run_on.stopped, "pick another prompt: the long one must not stop early"
    prompts2 = [list(range(2, 2 + n)) for n in (9, 2, 14, 5, 7)]
    out = []
    for prompts, eos, batch in (([long_prompt, short_prompt], first, 4), (prompts2, 1, 2)):
        expected = generate(model, prompts, eos_token_id=eos, pad_token_id=0, max_new_tokens=MAX_NEW, batch_size=batch)
        out.append({"prompts": prompts, "eos": eos, "batch": batch,
                    "expected": [[c.tokens, c.stopped] for c in expected]})
    return out


def _worker(rank: int, world: int, folder: str) -> None:
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": os.environ["TEST_PORT"]}
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))  # a hang fails
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from modules.distributed import gathered_state_dict

    model = tiny_model()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    mesh = init_device_mesh("cpu", (world,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    results = []
    for case in json.load(open(f"{folder}/cases.json")):
        completions = generate_across_ranks(model, case["prompts"], synced=True, eos_token_id=case["eos"],
                                            pad_token_id=0, max_new_tokens=MAX_NEW, batch_size=case["batch"])
        results.append([[c.tokens, c.stopped] for c in completions])
    state = gathered_state_dict(model)
    same = sorted(state) == sorted(reference) and all(torch.equal(state[k], reference[k]) for k in reference)
    same = same if rank == 0 else state == {}  # assembled on rank 0 only: the others hold no copy
    json.dump({"results": results, "state_matches": same}, open(f"{folder}/rank{rank}.json", "w"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_fsdp2_ranks_generate_in_lock_step_and_export_whole_weights(tmp_path, monkeypatch):
    model = tiny_model()
    all_cases = cases(model)
    (tmp_path / "cases.json").write_text(json.dumps(all_cases))
    monkeypatch.setenv("TEST_PORT", str(free_port()))
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        out = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert out["results"] == [c["expected"] for c in all_cases]  # every rank has all answers, as one process
        assert out["state_matches"]
    assert all_cases[0]["expected"][1] == [[], True] and len(all_cases[0]["expected"][0][0]) == MAX_NEW
