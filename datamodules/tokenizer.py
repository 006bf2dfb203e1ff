"""Tokenizers: any Hugging Face tokenizer by path, or a sentencepiece BPE trained on the task text (offline default).

The trained tokenizer is saved as a normal Hugging Face folder (``tokenizer.model`` + ``tokenizer_config.json``),
so ``AutoTokenizer.from_pretrained`` loads it and an exported model ships with it. Newlines are a piece of their
own and no dummy prefix is added.

Training texts are tokenised as one text (``encode_sections``), never segment by segment: a tokenizer with a dummy
prefix (Llama-1/2, Mistral) would start every segment with ``▁``, teaching the model ``\n Feedback:`` where it
reads ``\nFeedback:`` at test time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import sentencepiece as spm
from transformers import AddedToken, AutoTokenizer, PreTrainedTokenizerBase

# Phrases of TriPosT's feedback and headers, so the trained vocabulary has pieces for them before any feedback exists.
FEEDBACK_PHRASES = (
    "Feedback: Step (1) to step (2) are correct. The final response is also correct.\n"
    'Feedback: Step (1) is correct. In step (2) the part "" is incorrect. This is because there is a calculation '
    "error, since it is not consistent with the original equation. This answer is inconsistent with the result in "
    "step (3).\nUpdated Answer: Let's think step by step.\n"
)


def train_sentencepiece(
    corpus: Iterable[str],
    vocab_size: int,
    out_dir: str | Path,
    fixed_pieces: Iterable[str] = (),
    split_digits: bool = True,
) -> PreTrainedTokenizerBase:
    """Train a BPE sentencepiece model on ``corpus`` and save it as a Hugging Face tokenizer folder.

    With ``split_digits`` every digit is a piece of its own, and ``-`` always is, so a number is spelled the same
    wherever it stands; without it BPE merges digits with brackets and dots (``(12``, ``8.``), fewer but less
    regular pieces.
    ``fixed_pieces`` are strings that become one piece each, e.g. a task's fixed answer header: the model reads
    it in every prompt and never has to spell it out.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = [FEEDBACK_PHRASES, *corpus]
    try:
        _train(texts, vocab_size, out_dir, split_digits)
    except RuntimeError as error:
        if "smaller than required_chars" not in str(error):
            raise
        raise ValueError(f"vocab_size={vocab_size} is too small for this task's text (256 byte pieces plus every "
                         f"character it uses): raise --data.init_args.vocab_size ({error})") from None
    (out_dir / "tokenizer.vocab").unlink(missing_ok=True)
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": False,
        "add_eos_token": False,
        "legacy": False,
        "add_prefix_space": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    pieces = [AddedToken(piece, normalized=False) for piece in fixed_pieces if piece.strip()]
    if pieces:  # matched on the raw text before any splitting, so the piece keeps its spaces
        tokenizer = load_tokenizer(out_dir)
        tokenizer.add_tokens(pieces)
        tokenizer.save_pretrained(out_dir)
    return load_tokenizer(out_dir)


def task_tokenizer(folder: Path, corpus: Callable[[], list[str]], vocab_size: int, fixed_pieces: Sequence[str],
                   split_digits: bool, trainer=None) -> PreTrainedTokenizerBase:
    """The tokenizer trained on a task's text in ``folder``: loaded if it is there (a resumed run keeps the
    vocabulary its checkpoint was trained with), else trained from ``corpus()``. Under a distributed trainer rank 0
    trains while the others wait, so no rank reads a half-written folder."""
    if not (folder / "tokenizer.model").exists() and (trainer is None or trainer.is_global_zero):
        train_sentencepiece(corpus(), vocab_size, folder, fixed_pieces, split_digits)
    if trainer is not None:
        trainer.strategy.barrier("task tokenizer")
    return load_tokenizer(folder)


def encode_sections(tokenizer: PreTrainedTokenizerBase, sections: Sequence[str]) -> tuple[list[int], list[int]]:
    """``"".join(sections)`` tokenised as one text (with the tokenizer's special tokens, e.g. BOS, as a prompt is
    encoded for generation), and for every token the index of the section it belongs to.

    A section's tokens are those the prefix up to its end tokenises to on its own, as long as they agree with the
    whole text's; a token that spans a boundary (the prefix alone tokenises differently) goes to the later
    section. So the first section's tokens are exactly the prompt a model is given at test time whenever the
    tokenizer does not merge across its end (every tokenizer here, with prompts ending in a newline).
    """
    ids = tokenizer.encode("".join(sections), add_special_tokens=True)
    owners, start = [], 0
    for index in range(len(sections) - 1):
        prefix = tokenizer.encode("".join(sections[: index + 1]), add_special_tokens=True)
        end = start
        while end < min(len(prefix), len(ids)) and prefix[end] == ids[end]:
            end += 1
        owners += [index] * (end - start)
        start = end
    owners += [len(sections) - 1] * (len(ids) - start)
    return ids, owners


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer and check what training and batched generation need: an EOS, and a pad token (EOS when it
    has none)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except OSError as error:
        raise FileNotFoundError(f"--data.init_args.tokenizer={str(path)!r} (by default the pretrained "
                                f"--model.init_args.model) loads no tokenizer: give a hub name or a folder with the "
                                f"tokenizer's files ({error})") from error
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"tokenizer at {path} has no EOS token: the model could not learn to stop. "
            "Point --data.init_args.tokenizer at one with an eos_token (with no pretrained --model.init_args.model "
            "and no tokenizer, one is trained on the task)."
        )
    if tokenizer.pad_token_id is None:
        # Batches pad with EOS: attention masks and loss weights come from lengths, never from ids, so no new token
        # (and no new, untrained embedding row) is needed; an EOS the model writes is still learned and honoured.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _train(texts: list[str], vocab_size: int, out_dir: Path, split_digits: bool) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(out_dir / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        byte_fallback=True,  # text the corpus never showed (other tasks, a teacher's words) still round-trips
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        # "-" never merges: BPE glued signs to brackets ("((-" in the question, "(-" in the rationale), so the
        # tiny model could copy every digit of a number but not its sign
        user_defined_symbols=["\n", "-"],
        split_digits=split_digits,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        max_sentence_length=1 << 20,
        hard_vocab_limit=False,  # a small corpus may not support vocab_size pieces: take what it supports
        num_threads=1,  # deterministic: every rank trains the same vocabulary
        minloglevel=2,
    )
