"""The GPU recipes' strategy blocks build Lightning's own FSDP strategy with the wrap and activation-checkpointing
policies named by decoder-layer class in YAML (no GPU needed to build one; training with it needs CUDA)."""

import pytest
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import FSDPStrategy, Strategy
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from tests.test_cli import REPO

RECIPES = ["configs/tripost/smollm2_135m_gpu.yaml", "configs/tripost/llama7b_fsdp8.yaml"]


def build(strategy_config: dict) -> Strategy:
    parser = ArgumentParser()
    parser.add_subclass_arguments(Strategy, "strategy")
    return parser.instantiate_classes(parser.parse_object({"strategy": strategy_config})).strategy


@pytest.mark.parametrize("config", RECIPES)
def test_recipes_wrap_and_checkpoint_each_decoder_layer(config):
    block = yaml.safe_load((REPO / config).read_text())["trainer"]["strategy"]
    strategy = build(block)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert strategy.cpu_offload.offload_params is False


def test_cpu_offload_and_another_layer_class_are_flags_away():
    block = yaml.safe_load((REPO / RECIPES[1]).read_text())["trainer"]["strategy"]
    block["init_args"] |= {"cpu_offload": True,
                           "auto_wrap_policy": ["transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer"]}
    strategy = build(block)
    assert strategy.cpu_offload.offload_params is True
    assert [c.__name__ for c in strategy.kwargs["auto_wrap_policy"]._module_classes] == ["Qwen2DecoderLayer"]
