"""LoRA merging for the export: the merged plain state dict computes what the PEFT model computes."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from modules.pretrained import LoRA, add_lora, merged_state_dict


def tiny(kind: str):
    torch.manual_seed(0)
    if kind == "gpt2":  # Conv1D layers: weights stored transposed (PEFT's fan_in_fan_out)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=48, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=2))
    return model.eval()  # no dropout: outputs compare exactly


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_merged_weights_compute_what_the_adapted_model_computes(kind):
    adapted = add_lora(tiny(kind), LoRA(r=4, alpha=8, dropout=0.0), "CAUSAL_LM", "--model.init_args.lora")
    with torch.no_grad():  # as if trained: B starts at zero, which would hide a wrong merge
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    plain = tiny(kind)
    plain.load_state_dict(merged_state_dict(adapted, adapted.state_dict()))
    ids = torch.tensor([[1, 7, 3, 9, 4]])
    adapted.eval()
    with torch.no_grad():
        base = tiny(kind)(ids).logits
        assert (adapted(ids).logits - base).abs().max() > 1e-2  # the adapters matter here
        assert torch.allclose(plain(ids).logits, adapted(ids).logits, atol=1e-5)


def test_lora_on_no_existing_layer_lists_the_models_linear_layers_gpt2_included():
    with pytest.raises(ValueError, match=r"matches no module.*'c_attn', 'c_fc', 'c_proj'"):
        add_lora(tiny("gpt2"), LoRA(target_modules=["q_proj"]), "CAUSAL_LM", "--model.init_args.lora")
