"""Preference data for PIT as interaction logs: Anthropic HH-RLHF, OpenAI TL;DR comparisons, the synthetic task.

Every preference triple ``(x, y_w, y_l)`` becomes one episode: prompt ``x``, turns ``reference`` = ``y_l`` and
``response`` = ``y_w`` (both by ``dataset``), outcome ``improved``: exactly PIT's SFT example (improve ``y_l`` into
``y_w``) and the reward model's (w, l) pair. Exact scores, where a task has them, go in ``scores["quality"]``
as ``[reference, response]``.

Sources are a Hugging Face hub name (``Anthropic/hh-rlhf``, ``openai/summarize_from_feedback:comparisons``, i.e.
``name:config``), read through
``datasets``, or local ``.json``/``.jsonl`` files. Local rows are parsed here line by line, so a bad row is reported
as ``file:line: what is wrong``; a hub row as ``name[split]:row N``. PIT splits the training data into three equal
folds, for SFT, the reward model and RL (reference pit.md §3.1): ``three_folds`` does that with a seeded shuffle.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datamodules.interaction_log import Episode, Turn

FOLDS = ("sft", "rm", "rl")
HH_ASSISTANT = "\n\nAssistant:"


class PreferenceError(ValueError):
    """A preference row that cannot be used; the message starts with ``where:``."""


@dataclass(frozen=True)
class Preference:
    id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_score: float | None = None
    rejected_score: float | None = None

    def episode(self, task: str) -> Episode:
        scores = {} if self.chosen_score is None else {"quality": [self.rejected_score, self.chosen_score]}
        return Episode(id=self.id, task=task, iteration=0, prompt=self.prompt,
                       turns=(Turn("reference", self.rejected, "dataset"), Turn("response", self.chosen, "dataset")),
                       outcome="improved", scores=scores)


def rows(source: str, split: str = "train") -> Iterator[tuple[str, dict]]:
    """``(where, row)`` for every row of a local JSON/JSONL file (``where`` = ``file:line``) or a hub dataset."""
    path = Path(source).expanduser()
    if path.suffix in (".jsonl", ".json") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"preference file not found: {path}")
        yield from _local_rows(path)
        return
    from datasets import load_dataset  # only for hub sources: importing datasets costs seconds

    name, _, config = source.partition(":")  # "openai/summarize_from_feedback:comparisons"
    try:
        dataset = load_dataset(name, config or None, split=split)
    except Exception as error:  # noqa: BLE001 - datasets raises many types; all mean "cannot load this source"
        raise FileNotFoundError(f"cannot load preference data {source!r} (split {split!r}): {error}. Offline, pass a "
                                "local .jsonl file instead") from error
    for index, row in enumerate(dataset):
        yield f"{source}[{split}]:row {index}", row


def _local_rows(path: Path) -> Iterator[tuple[str, dict]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise PreferenceError(f"{path}: not valid JSON ({error})") from None
        for index, row in enumerate(records):
            yield f"{path}:item {index}", row
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as error:
            raise PreferenceError(f"{path}:{lineno}: not valid JSON ({error.msg})") from None


def _text(where: str, row: object, *keys: str) -> str:
    value = row
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise PreferenceError(f"{where}: missing field {'.'.join(keys)!r}")
        value = value[key]
    if not isinstance(value, str):
        raise PreferenceError(f"{where}: field {'.'.join(keys)!r} must be a string")
    return value


def hh_rlhf(source: str = "Anthropic/hh-rlhf", split: str = "train", limit: int | None = None) -> list[Preference]:
    """HH-RLHF: ``chosen`` / ``rejected`` are whole dialogues sharing everything up to the last ``Assistant:``;
    that shared part is ``x`` and the two last replies are ``y_w`` / ``y_l``."""
    prefs = []
    for where, row in rows(source, split):
        chosen, rejected = _text(where, row, "chosen"), _text(where, row, "rejected")
        cut_w, cut_l = chosen.rfind(HH_ASSISTANT), rejected.rfind(HH_ASSISTANT)
        if cut_w < 0 or cut_l < 0:
            raise PreferenceError(f"{where}: a dialogue has no '\\n\\nAssistant:' turn")
        prompt = chosen[: cut_w + len(HH_ASSISTANT)]
        if rejected[: cut_l + len(HH_ASSISTANT)] != prompt:
            raise PreferenceError(f"{where}: 'chosen' and 'rejected' differ before their last Assistant turn")
        y_w, y_l = chosen[cut_w + len(HH_ASSISTANT) :].strip(), rejected[cut_l + len(HH_ASSISTANT) :].strip()
        if y_w == y_l:
            continue  # identical replies carry no preference
        prefs.append(Preference(f"hh-{len(prefs):06d}", prompt, " " + y_w, " " + y_l))
        if limit is not None and len(prefs) >= limit:
            break
    return prefs


def tldr(source: str = "openai/summarize_from_feedback:comparisons", split: str = "train", limit: int | None = None) -> list[Preference]:
    """TL;DR comparisons: ``info`` (post, title, subreddit), two ``summaries`` and the human ``choice`` (0 or 1)."""
    prefs = []
    for where, row in rows(source, split):
        post, title = _text(where, row, "info", "post"), _text(where, row, "info", "title")
        subreddit = row["info"].get("subreddit") or ""
        summaries, choice = row.get("summaries"), row.get("choice")
        if not (isinstance(summaries, list) and len(summaries) == 2 and choice in (0, 1)):
            raise PreferenceError(f"{where}: expected two 'summaries' and 'choice' 0 or 1")
        texts = [_text(f"{where} summaries[{i}]", s, "text") for i, s in enumerate(summaries)]
        prompt = f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"
        prefs.append(Preference(f"tldr-{len(prefs):06d}", prompt, " " + texts[choice].strip(),
                                " " + texts[1 - choice].strip()))
        if limit is not None and len(prefs) >= limit:
            break
    return prefs


def constrained_lists(num_pairs: int = 3000, seed: int = 0) -> list[Preference]:
    """The offline synthetic task (``tasks.constrained_lists``), with exact scores."""
    from tasks.constrained_lists import preference_pairs

    return [Preference(f"cl-{i:06d}", x, w, l, sw, sl) for i, (x, w, l, sw, sl) in enumerate(preference_pairs(num_pairs, seed))]


def three_folds(prefs: list[Preference], seed: int = 0) -> dict[str, list[Preference]]:
    """PIT's three equal folds (SFT / reward model / RL) of a seeded shuffle; a remainder of 1-2 rows is dropped."""
    order = list(range(len(prefs)))
    random.Random(f"folds/{seed}").shuffle(order)
    size = len(prefs) // 3
    if size == 0:
        raise ValueError(f"{len(prefs)} preference pairs cannot make three folds")
    return {fold: [prefs[i] for i in order[k * size : (k + 1) * size]] for k, fold in enumerate(FOLDS)}


# ---- sources, as config classes (``class_path: datamodules.preference.ConstrainedLists`` ...) ---------------------


class PreferenceSource:
    """Where preference pairs come from; ``score`` is the exact quality where the task has one (else None)."""

    name: str

    def load(self) -> list[Preference]:
        raise NotImplementedError

    def score(self, prompt: str, response: str) -> float | None:
        return None


class ConstrainedLists(PreferenceSource):
    """The offline synthetic task (``tasks.constrained_lists``): exact score = fraction of five constraints met.

    Args:
        num_pairs: preference pairs generated (split into three folds).
        seed: generator seed.
    """

    name = "constrained_lists"

    def __init__(self, num_pairs: int = 3000, seed: int = 0) -> None:
        self.num_pairs, self.seed = num_pairs, seed

    def load(self) -> list[Preference]:
        return constrained_lists(self.num_pairs, self.seed)

    def score(self, prompt: str, response: str) -> float | None:
        from tasks.constrained_lists import score

        return score(prompt, response)


class HHRLHF(PreferenceSource):
    """Anthropic HH-RLHF (``chosen``/``rejected`` dialogues).

    Args:
        source: hub name or a local ``.jsonl``/``.json`` file.
        split: hub split.
        limit: first N usable pairs only (None: all).
    """

    name = "hh_rlhf"

    def __init__(self, source: str = "Anthropic/hh-rlhf", split: str = "train", limit: int | None = None) -> None:
        self.source, self.split, self.limit = source, split, limit

    def load(self) -> list[Preference]:
        return hh_rlhf(self.source, self.split, self.limit)


class TLDR(PreferenceSource):
    """OpenAI TL;DR comparisons (``info``, two ``summaries``, ``choice``).

    Args:
        source: hub name and config (``openai/summarize_from_feedback:comparisons``) or a local file.
        split: hub split.
        limit: first N pairs only (None: all).
    """

    name = "tldr"

    def __init__(self, source: str = "openai/summarize_from_feedback:comparisons", split: str = "train",
                 limit: int | None = None) -> None:
        self.source, self.split, self.limit = source, split, limit

    def load(self) -> list[Preference]:
        return tldr(self.source, self.split, self.limit)
