"""Date Understanding and Logical Deduction: BIG-bench multiple-choice tasks whose rationales a teacher LLM writes.

No script can write or check these rationales, so (as in TriPosT, reference §4) the gold rationales come from a
teacher LLM and are kept only when the chosen option is the gold one. That collection is a command of its own
(``python -m feedback.collect_rationales``) that writes an interaction-log shard; the task reads it back through
``rationales``. Questions look like::

    Q: Yesterday was April 30, 2021. What is the date today in MM/DD/YYYY?
    Options:
    (A) 05/01/2021
    (B) 02/23/2021
    ...
    Answer: Let's think step by step.
    (1) ...
    (Final response) So the answer is (A).

Options are shuffled with a seeded generator (BIG-bench lists the right one first). Buckets follow the reference:
Date Understanding is seen when its teacher rationale has 1–2 numbered steps and unseen with 3 or more (so its
buckets exist only once rationales are collected); Logical Deduction is seen for 3 and 5 objects, unseen for 7.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from datamodules.interaction_log import read_shard
from tasks.base import BIGBENCH_DIR, Question, Task, read_bigbench, resolve_data_path, split_steps

DEFAULT_DATA_DIR = BIGBENCH_DIR
_ANSWER = re.compile(r"the answer is \(([A-Z])\)")
_STOP_WORDS = {"the", "is", "a", "an", "of", "from"}
COLLECT_HINT = ("collect them with `python -m feedback.collect_rationales --config <the run's config>` and pass the "
                "shard as --data.init_args.task.init_args.rationales=<path>")


def load_choices(source: Path | str) -> list[tuple[str, list[str], int]]:
    """``(input, options, gold index)`` of every example of a BIG-bench multiple-choice task file, or of a hub
    dataset in BIG-bench's Hugging Face layout (``source`` a ``hf:<name>/<config>`` string, e.g.
    ``hf:tasksource/bigbench/date_understanding``; train and validation splits, in that order)."""
    rows = []
    for where, example in read_bigbench(source, "the task's --data.init_args.task.init_args.data_path / data_dir"):
        scores = example.get("target_scores") if isinstance(example, dict) else None
        if not (isinstance(example.get("input"), str) and isinstance(scores, dict) and len(scores) >= 2):
            raise ValueError(f"{where}: expected 'input' (string) and 'target_scores' (2+ options)")
        best = [option for option, score in scores.items() if score == 1]
        if len(best) != 1:
            raise ValueError(f"{where}: expected exactly one option with score 1, found {len(best)}")
        options = list(scores)
        rows.append((example["input"].strip(), options, options.index(best[0])))
    return rows


def letter(index: int) -> str:
    return f"({chr(ord('A') + index)})"


class MultipleChoiceTask(Task):
    """Shared by Date Understanding and Logical Deduction: options, answer parsing, teacher-written rationales."""

    #: kept rationales by question id (empty until ``rationales`` is given)
    _rationales: dict[str, str]

    def _make_question(self, qid: str, text: str, options: list[str], gold: int, bucket: str, seen: bool,
                       rng: random.Random) -> Question:
        order = list(range(len(options)))
        rng.shuffle(order)
        lines = [f"{letter(i)} {options[j]}" for i, j in enumerate(order)]
        return Question(qid, text + "\nOptions:\n" + "\n".join(lines), letter(order.index(gold)), bucket, seen)

    def _load_rationales(self, path: str | None) -> dict[str, str]:
        """``{question id: rationale}`` of the episodes of a collection shard whose rationale chose the gold option."""
        if path is None:
            return {}
        kept = {}
        for episode in read_shard(resolve_data_path(path)):
            if episode.task != self.name:
                raise ValueError(f"{path}: episode {episode.id} is for task {episode.task!r}, not {self.name!r}")
            if episode.outcome == "correct" and episode.question_id is not None:
                kept[episode.question_id] = episode.turns[0].text
        if not kept:
            raise ValueError(f"{path}: no usable rationale (no episode with outcome 'correct'); {COLLECT_HINT}")
        return kept

    def gold_rationale(self, question: Question) -> str:
        if question.id not in self._rationales:
            raise ValueError(f"{self.name}: no teacher rationale for question {question.id}; {COLLECT_HINT}")
        return self._rationales[question.id]

    def extract_answer(self, attempt: str) -> str | None:
        for label, line in split_steps(attempt):
            if label == "Final response" and (match := _ANSWER.search(line)):
                return f"({match.group(1)})"
        return None

    def option_text(self, question: Question, answer: str) -> str | None:
        """The text of option ``answer`` ("(B)") in the question, or None if it has no such option."""
        for line in question.question.splitlines():
            if line.startswith(answer + " "):
                return line[len(answer) + 1 :].strip()
        return None

    def is_correct(self, question: Question, attempt: str) -> bool:
        """The gold option, and (reference ``has_valid_content``) the reasoning arrives at that option's content."""
        answer = self.extract_answer(attempt)
        if answer != question.answer:
            return False
        option = self.option_text(question, answer) or ""
        lines = [line for _, line in split_steps(attempt)]
        return self._content_supported(option, lines[:-1])

    def _content_supported(self, option: str, steps: list[str]) -> bool:
        raise NotImplementedError

    def pool(self) -> list[Question]:
        """The questions a teacher writes rationales for (``python -m feedback.collect_rationales``)."""
        raise NotImplementedError


class DateUnderstanding(MultipleChoiceTask):
    """BIG-bench date understanding (369 questions, 5–6 options).

    Args:
        data_path: BIG-bench's ``date_understanding`` task.json (default: the copy shipped in ``tasks/data/bigbench``),
            or ``hf:<name>/<config>`` for a hub copy in BIG-bench's Hugging Face layout (e.g.
            ``hf:tasksource/bigbench/date_understanding``).
        rationales: the collection shard written by ``python -m feedback.collect_rationales`` (teacher rationales;
            those that chose the gold option become the gold rationales). Needed for both splits, since a
            question's bucket is the length of its rationale.
        num_test_seen: held-out questions with 1–2-step rationales (the rest of them are training questions);
            every question with a 3+-step rationale is an unseen test question.
        seed: seeds the option order and the split.
    """

    name = "date_understanding"

    def __init__(self, data_path: str = f"{DEFAULT_DATA_DIR}/date_understanding.json", rationales: str | None = None,
                 num_test_seen: int = 55, seed: int = 0) -> None:
        self.data_path = resolve_data_path(data_path)
        rng = random.Random(f"{self.name}/{seed}")
        self._pool = [self._make_question(f"du-{i:04d}", text, options, gold, "pool", True, rng)
                      for i, (text, options, gold) in enumerate(load_choices(self.data_path))]
        self._rationales = self._load_rationales(rationales)
        self._splits: dict[str, list[Question]] | None = None
        if self._rationales:
            self._splits = self._split(num_test_seen, random.Random(f"{self.name}/split/{seed}"))

    def _split(self, num_test_seen: int, rng: random.Random) -> dict[str, list[Question]]:
        seen, unseen = [], []
        for q in self._pool:
            if q.id in self._rationales:
                steps = [label for label, _ in split_steps(self._rationales[q.id]) if label != "Final response"]
                bucket = "1-2 steps" if len(steps) <= 2 else "3+ steps"
                (seen if bucket == "1-2 steps" else unseen).append(Question(q.id, q.question, q.answer, bucket, bucket == "1-2 steps"))
        if num_test_seen >= len(seen):
            raise ValueError(f"{self.name}: only {len(seen)} questions have a 1–2-step rationale; num_test_seen="
                             f"{num_test_seen} would leave none to train on (lower it)")
        rng.shuffle(seen)
        test = sorted(seen[:num_test_seen] + unseen, key=lambda q: q.id)
        return {"train": sorted(seen[num_test_seen:], key=lambda q: q.id), "test": test}

    def questions(self, split: str) -> list[Question]:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        if self._splits is None:
            raise ValueError(f"{self.name}: its splits need teacher rationales (a question's bucket is its "
                             f"rationale's length); {COLLECT_HINT}")
        return list(self._splits[split])

    def pool(self) -> list[Question]:
        return list(self._pool)

    def buckets(self) -> list[str]:
        return ["1-2 steps", "3+ steps"]

    def _content_supported(self, option: str, steps: list[str]) -> bool:
        # reference filter: the chosen date appears in the step before the final response
        return bool(steps) and option in steps[-1]


class LogicalDeduction(MultipleChoiceTask):
    """BIG-bench logical deduction with 3, 5 (seen) and 7 (unseen) objects.

    Args:
        data_dir: folder with BIG-bench's ``logical_deduction_{three,five,seven}_objects.json`` (default: the copy
            shipped in ``tasks/data/bigbench``), or ``hf:<name>/<config>`` for a hub copy in BIG-bench's Hugging Face
            layout holding all three sizes (e.g. ``hf:tasksource/bigbench/logical_deduction``); there a question's
            size is its number of options, one per object.
        rationales: the collection shard written by ``python -m feedback.collect_rationales``; training questions
            are the 3- and 5-object questions with a kept rationale. Test questions need none.
        num_test_seen: held-out 3- and 5-object test questions (half each).
        num_test_unseen: 7-object test questions.
        seed: seeds the option order and the split.
    """

    name = "logical_deduction"
    answer_info = ' Let "??" represents 0 or more objects, and "?" represents exactly 1 object.'
    _FILES = {3: "three", 5: "five", 7: "seven"}

    def __init__(self, data_dir: str = DEFAULT_DATA_DIR, rationales: str | None = None, num_test_seen: int = 100,
                 num_test_unseen: int = 100, seed: int = 0) -> None:
        self.data_dir = resolve_data_path(data_dir)
        rng = random.Random(f"{self.name}/{seed}")
        by_size: dict[int, list[Question]] = {}
        for size, (prefix, rows) in self._load(self.data_dir).items():
            by_size[size] = [self._make_question(f"ld{size}-{i:04d}", f"{prefix} {text}".strip(), options, gold,
                                                 f"{size} objects", size != 7, rng)
                             for i, (text, options, gold) in enumerate(rows)]
            rng.shuffle(by_size[size])
        half = num_test_seen // 2
        if half > len(by_size[3]) or num_test_seen - half > len(by_size[5]) or num_test_unseen > len(by_size[7]):
            raise ValueError(f"{self.name}: asked for more test questions than {self.data_dir} holds")
        self._test = sorted(by_size[3][:half] + by_size[5][: num_test_seen - half] + by_size[7][:num_test_unseen],
                            key=lambda q: q.id)
        self._pool = sorted(by_size[3][half:] + by_size[5][num_test_seen - half :], key=lambda q: q.id)
        self._rationales = self._load_rationales(rationales)

    def _load(self, data_dir: Path | str) -> dict[int, tuple[str, list[tuple[str, list[str], int]]]]:
        """``{objects: (task prefix, rows)}`` for 3, 5 and 7 objects, from the three files or one hub copy."""
        if isinstance(data_dir, str):  # hub: BIG-bench's HF layout folds the prefix into the inputs
            rows = load_choices(data_dir)
            sizes = {len(options) for _, options, _ in rows}
            if not sizes <= set(self._FILES):
                raise ValueError(f"{data_dir}: expected 3, 5 or 7 options per question (one per object), found "
                                 f"{sorted(sizes - set(self._FILES))} (--data.init_args.task.init_args.data_dir)")
            return {size: ("", [row for row in rows if len(row[1]) == size]) for size in self._FILES}
        loaded = {}
        for size, word in self._FILES.items():
            path = data_dir / f"logical_deduction_{word}_objects.json"
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            loaded[size] = (" ".join(data.get("task_prefix", "").split()), load_choices(path))
        return loaded

    def questions(self, split: str) -> list[Question]:
        if split == "test":
            return list(self._test)
        if split != "train":
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        if not self._rationales:
            raise ValueError(f"{self.name}: training needs teacher rationales; {COLLECT_HINT}")
        return [q for q in self._pool if q.id in self._rationales]

    def pool(self) -> list[Question]:
        return list(self._pool)

    def buckets(self) -> list[str]:
        return ["3 objects", "5 objects", "7 objects"]

    def _content_supported(self, option: str, steps: list[str]) -> bool:
        # reference filter: the chosen option's key words appear in the last two lines
        words = [w for w in re.findall(r"[a-z]+", option.lower()) if w not in _STOP_WORDS]
        tail = " ".join(steps[-1:]).lower() + " " + " ".join(steps[-2:-1]).lower()
        return all(w in tail for w in words)
