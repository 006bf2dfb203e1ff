"""Word sorting (BIG-bench data, TriPosT's scripted rationales, feedback and improvements).

The rationale language (the gold rationale writer, the step parser and the explanation of an attempt's first
difference from the gold rationale) is in ``tasks/word_sorting_rationale.py``; this module is the task: data,
splits, answers, verifier and scripted improvements.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from feedback.base import Dropped, Feedback, error_feedback
from tasks.base import BIGBENCH_DIR, Question, Task, correct_feedback, read_bigbench, resolve_data_path, split_steps
from tasks.word_sorting_rationale import (
    ANSWER,
    explain,
    first_difference,
    gold_steps,
    parse_step,
    rationale_steps,
    solve,
)

DEFAULT_DATA_PATH = f"{BIGBENCH_DIR}/word_sorting.json"
BUCKETS = ["2-3", "4-7", "8-10", "11-15", "16+"]
SEEN_BUCKETS = BUCKETS[:2]
MAX_SEEN_WORDS = 7
QUESTION_PREFIX = "Sort the following words alphabetically:\nList: "


def _bucket(num_words: int) -> str:
    for bucket, top in zip(BUCKETS, (3, 7, 10, 15)):
        if num_words <= top:
            return bucket
    return BUCKETS[-1]


def question_words(question: Question) -> list[str]:
    match = re.search(r"List:(.*)", question.question)
    if match is None:
        raise ValueError(f"question {question.id} has no 'List:' line")
    return match.group(1).split()


def load_examples(source: Path | str) -> list[tuple[int, list[str]]]:
    """``(index, words)`` of every BIG-bench example, checked: the target must be the input sorted. ``source`` is
    a task.json or a hub copy in BIG-bench's Hugging Face layout (``hf:<name>/<config>``)."""
    rows = []
    for index, (where, example) in enumerate(read_bigbench(source, "--data.init_args.task.init_args.data_path")):
        if not (isinstance(example, dict) and isinstance(example.get("input"), str)
                and isinstance(example.get("target"), str)):
            raise ValueError(f"{where}: expected an object with string 'input' and 'target'")  # noqa: TRY004
        # a hub copy's input is the whole question: "Sort the following words alphabetically: List: b a\nSorted:"
        text = example["input"]
        words = (text.split("List:", 1)[1].splitlines()[0] if "List:" in text else text).split()
        if not words or any('"' in word for word in words):
            raise ValueError(f"{where}: expected a non-empty list of words without '\"'")
        if example["target"].split() != sorted(words):
            raise ValueError(f"{where}: the target is not the input words in sorted order")
        rows.append((index, words))
    return rows


class WordSorting(Task):
    """BIG-bench word sorting with TriPosT's scripted rationales, verifier and improvements.

    Seen lists have at most 7 words (train and seen test); unseen lists have 8 or more (test only). The default
    sizes are TriPosT's: 473 training lists (its 433 train + 40 validation), 127 seen and 252 unseen test lists.

    Args:
        data_path: BIG-bench's ``word_sorting`` task.json (default: the copy shipped in ``tasks/data/bigbench``; a
            relative path is resolved from the repository root), or ``hf:<name>/<config>`` for a hub copy in
            BIG-bench's Hugging Face layout (e.g. ``hf:tasksource/bigbench/word_sorting``; train, then validation).
        num_train: training lists, drawn from the seen (<= 7 words) examples.
        num_test_seen: seen test lists, disjoint from the training lists.
        num_test_unseen: unseen (8+ words) test lists.
        seed: sampling seed; the same arguments always give the same questions.
    """

    name = "word_sorting"

    def __init__(self, data_path: str = DEFAULT_DATA_PATH, num_train: int = 473, num_test_seen: int = 127,
                 num_test_unseen: int = 252, seed: int = 0) -> None:
        self.data_path = resolve_data_path(data_path)
        rows = load_examples(self.data_path)
        seen = [row for row in rows if len(row[1]) <= MAX_SEEN_WORDS]
        unseen = [row for row in rows if len(row[1]) > MAX_SEEN_WORDS]
        if min(num_train, num_test_seen, num_test_unseen) < 0:
            raise ValueError("split sizes must be >= 0")
        if num_train + num_test_seen > len(seen) or num_test_unseen > len(unseen):
            raise ValueError(f"{self.data_path} has {len(seen)} seen and {len(unseen)} unseen lists; asked for "
                             f"{num_train} + {num_test_seen} seen and {num_test_unseen} unseen")
        rng = random.Random(f"{self.name}/{seed}")  # str seeds are stable across processes
        rng.shuffle(seen)
        rng.shuffle(unseen)
        test = sorted(seen[:num_test_seen] + unseen[:num_test_unseen])
        self._splits = {
            "train": [self._question(*row) for row in seen[num_test_seen : num_test_seen + num_train]],
            "test": [self._question(*row) for row in test],
        }

    @staticmethod
    def _question(index: int, words: list[str]) -> Question:
        bucket = _bucket(len(words))
        return Question(f"ws-{index:04d}", QUESTION_PREFIX + " ".join(words), " ".join(sorted(words)), bucket,
                        bucket in SEEN_BUCKETS)

    def questions(self, split: str) -> list[Question]:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        return list(self._splits[split])

    def buckets(self) -> list[str]:
        return list(BUCKETS)

    def gold_rationale(self, question: Question) -> str:
        return solve(question_words(question))

    def slipped_rationale(self, question: Question, rng: random.Random) -> str:
        """The gold rationale with two neighbours swapped in its last ordering step, carried into the answer."""
        lines = self.gold_rationale(question).splitlines()
        words = question.answer.split()
        if len(words) < 2:
            return "\n".join(lines)  # nothing to swap: the demo is a correct attempt
        i = rng.randrange(len(words) - 1)
        swapped = words[:i] + [words[i + 1], words[i]] + words[i + 2 :]
        lines[-2] = lines[-2][: lines[-2].index('"')] + " < ".join(f'"{w}"' for w in swapped) + "."
        lines[-1] = lines[-1][: lines[-1].index(":") + 1] + " " + " ".join(swapped) + "."
        return "\n".join(lines)

    def extract_answer(self, attempt: str) -> str | None:
        for label, line in rationale_steps(attempt):
            if label == "Final response" and (match := ANSWER.search(line)):
                words = match["body"].removesuffix(".").split()
                return " ".join(words) if words else None
        return None

    def is_correct(self, question: Question, attempt: str) -> bool:
        """Gold answer and TriPosT's ``has_valid_content``: no "Hence" step still holds a "?"."""
        hence = [line for _, line in rationale_steps(attempt) if "Hence" in line]
        return self.extract_answer(attempt) == question.answer and not any("?" in line for line in hence)

    def verify(self, question: Question, attempt: str) -> Feedback:
        words, steps = question_words(question), rationale_steps(attempt)
        if not steps:
            raise ValueError("the attempt has no numbered steps")
        gold = gold_steps(words)
        index = first_difference(steps, gold)
        if index is not None:
            label = steps[index][0]
            segment, reason = explain(parse_step(label, steps[index][1]), gold, index, words)
            return error_feedback(steps[index - 1][0] if index else None, label, segment or f"({label})", reason)
        if steps[-1][0] != "Final response":
            raise ValueError("the attempt ends without a (Final response) step")
        return Feedback(text=correct_feedback(attempt), correct=True)

    def scripted_improvement(self, question: Question, attempt: str, feedback: Feedback) -> str | Dropped:
        steps, gold_text = rationale_steps(attempt), solve(question_words(question))
        gold = [parse_step(label, line) for label, line in split_steps(gold_text)]
        first = first_difference(steps, gold)
        # labels can repeat in model output, so prefer the first wrong step when it carries the named label
        if first is not None and steps[first][0] == feedback.step:
            index = first
        else:
            index = next((i for i, (label, _) in enumerate(steps) if label == feedback.step), None)
        if index is None:
            return Dropped(f"the attempt has no step ({feedback.step})")
        if first is not None and first < index:
            return Dropped(f"step ({steps[first][0]}) before the wrong step is itself wrong")
        return "\n".join([line for _, line in steps[:index]] + gold_text.splitlines()[index:])
