"""What every task provides: questions with gold answers, gold rationales, answer parsing, buckets.

Text formats follow TriPosT (reference §3.1): a rationale is numbered steps ``(1) ...`` (word sorting nests them,
``(3.1)``) ending in ``(Final response) So the answer is X.``; the prompt a model answers is

    Q: {question}
    Answer: Let's think step by step.{answer_info}
    (1) ...

``answer_info`` is the task's fixed hint (arithmetic: the order-of-operations reminder) with its leading space.
"""

from __future__ import annotations

import json
import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # feedback.base imports this module, so only type checkers may import it back
    from feedback.base import Dropped, Feedback

ANSWER_HEADER = "Answer: Let's think step by step."
UPDATED_HEADER = "Updated Answer: Let's think step by step."
FEEDBACK_HEADER = "Feedback:"
CORRECT_MARKER = "final response is also correct"
FINAL_RESPONSE = "(Final response)"

_STEP_LABEL = re.compile(r"^\((\d+(?:\.\d+)*|Final response)\)")


@dataclass(frozen=True)
class Question:
    """One task instance.

    Args:
        id: stable identifier, unique within the task (e.g. ``"ma-train-00012"``); interaction logs refer to it.
        question: the question text without the ``Q: `` prefix; may span lines (word sorting's ``List: ...``).
        answer: the gold answer in the task's canonical string form (``"-7"``, ``"apple banana"``).
        bucket: the fine evaluation bucket (``"l3-4d2"``, ``"4-7"``); see ``Task.buckets``.
        seen: whether the bucket is one the training questions are drawn from.
    """

    id: str
    question: str
    answer: str
    bucket: str
    seen: bool


REPO_ROOT = Path(__file__).resolve().parent.parent
#: the BIG-bench task files shipped with the project (tasks/data/bigbench/README.md), relative to REPO_ROOT; an
#: installed (non-editable) copy finds them too, since they are package data of ``tasks``
BIGBENCH_DIR = "tasks/data/bigbench"
#: a task's data path written ``hf:<dataset>/<config>`` loads a hub copy in BIG-bench's Hugging Face layout
HUB_PREFIX = "hf:"


def resolve_data_path(path: str) -> Path | str:
    """A data path as given (``~`` expanded), or relative to the repository root, so configs work from any folder;
    a hub source (``hf:<name>/<config>``) stays the string it is."""
    if path.startswith(HUB_PREFIX):
        return path
    p = Path(path).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


def read_bigbench_examples(path: Path, flag: str) -> list:
    """The ``examples`` list of a BIG-bench task.json; a missing or malformed file names the ``flag`` that sets it."""
    if not path.is_file():
        raise FileNotFoundError(f"BIG-bench task file not found at {path}; set {flag}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list):
        raise ValueError(f'{path}: expected an object {{"examples": [...]}}')  # noqa: TRY004 - bad data, not code
    return examples


def read_bigbench(source: Path | str, flag: str) -> list[tuple[str, object]]:
    """``(where, example)`` of a BIG-bench task in task.json's layout (``input``, and ``target`` or
    ``target_scores``): a task.json's examples, or the rows of a hub copy (``source`` a string from
    ``resolve_data_path``; train, then validation). ``where`` locates the example for error messages."""
    if isinstance(source, str):
        return [(where, _task_json_layout(row)) for where, row in load_hub_rows(source, flag)]
    return [(f"{source}:{index}", example) for index, example in enumerate(read_bigbench_examples(source, flag))]


def _task_json_layout(row: dict) -> dict:
    """A row of BIG-bench's Hugging Face layout (``inputs``, ``targets``, ``multiple_choice_targets`` / ``_scores``)
    as task.json writes the example; what is missing stays missing, for the task's own checks to report."""
    example = {"input": strip_bigbench_input(row["inputs"])} if isinstance(row.get("inputs"), str) else {}
    options, scores = row.get("multiple_choice_targets"), row.get("multiple_choice_scores")
    if options:
        example["target_scores"] = dict(zip(options, scores or []))
    elif isinstance(row.get("targets"), list) and row["targets"]:
        example["target"] = row["targets"][0]
    return example


def load_hub_rows(source: str, flag: str) -> list[tuple[str, dict]]:
    """``(where, row)`` of every row of a hub dataset in BIG-bench's Hugging Face layout, ``source`` written
    ``hf:<name>/<config>`` (e.g. ``hf:tasksource/bigbench/word_sorting``): the train split, then validation.
    ``where`` locates the row for error messages; ``flag`` is the option that set ``source``."""
    name, _, config = source.removeprefix(HUB_PREFIX).rpartition("/")
    if not source.startswith(HUB_PREFIX) or not name or not config:
        raise ValueError(f"{source}: expected {HUB_PREFIX}<dataset name>/<config> ({flag})")
    from datasets import load_dataset  # only for hub sources: importing datasets costs seconds

    rows = []
    for split in ("train", "validation"):
        try:
            data = load_dataset(name, config, split=split)
        except Exception as error:  # noqa: BLE001 - datasets raises many types; all mean "cannot load this source"
            raise FileNotFoundError(f"cannot load {source} (split {split}) given by {flag}: {error}; offline, use the "
                                    f"BIG-bench files shipped in {BIGBENCH_DIR} (the default)") from error
        rows += [(f"{source}[{split}]:row {index}", row) for index, row in enumerate(data)]
    return rows


def strip_bigbench_input(text: str) -> str:
    """Hugging Face BIG-bench inputs may start with "Q:" and end in "A:": keep the question itself."""
    return text.strip().removesuffix("A:").strip().removeprefix("Q:").strip()


def correct_feedback(attempt: str) -> str:
    """TriPosT's fixed "correct" feedback: ``Step (1) to step (N) are correct. ...`` with N the last step label."""
    labels = step_labels(attempt)
    numbered = [label for label in labels if label != "Final response"]
    last = numbered[-1] if numbered else "1"
    return f"Step (1) to step ({last}) are correct. The final response is also correct."


def step_labels(attempt: str) -> list[str]:
    """Labels of the attempt's steps in order: ``["1", "2", "3.1", ..., "Final response"]``."""
    return [m.group(1) for line in attempt.splitlines() if (m := _STEP_LABEL.match(line.strip()))]


def split_steps(attempt: str) -> list[tuple[str, str]]:
    """The attempt as ``[(label, line), ...]``, one entry per step line; lines without a label are dropped."""
    steps = []
    for line in attempt.splitlines():
        line = line.strip()
        if m := _STEP_LABEL.match(line):
            steps.append((m.group(1), line))
    return steps


class Task(ABC):
    """A verifiable reasoning task in TriPosT's text format.

    Subclasses are constructed from the config (their ``__init__`` arguments are CLI flags) and must be
    deterministic given their seed: the same arguments give the same questions in the same order.
    """

    #: short name used in logs and metric names
    name: str
    #: text after "Answer: Let's think step by step." (leading space included, or empty)
    answer_info: str = ""

    @abstractmethod
    def questions(self, split: str) -> list[Question]:
        """The questions of ``split`` (``"train"`` or ``"test"``); train holds seen buckets only."""

    @abstractmethod
    def gold_rationale(self, question: Question) -> str:
        """The scripted step-by-step rationale, numbered steps through ``(Final response) ...``, no header."""

    @abstractmethod
    def extract_answer(self, attempt: str) -> str | None:
        """The answer stated in the attempt's ``(Final response)`` line in canonical form, or None if absent."""

    @abstractmethod
    def buckets(self) -> list[str]:
        """All fine buckets in display order (seen ones first)."""

    def is_correct(self, question: Question, attempt: str) -> bool:
        """Gold-based correctness of an attempt (TriPosT decides "correct" from the gold answer, never a model).
        Tasks add the reference editor's ``has_valid_content`` check, so this is stricter than ``answer_matches``."""
        return self.extract_answer(attempt) == question.answer

    def answer_matches(self, question: Question, attempt: str) -> bool:
        """The reference evaluator's metric (reference §6.5): the answer of the final response equals the gold
        answer, with none of ``is_correct``'s content checks. The papers' accuracies are this one."""
        return self.extract_answer(attempt) == question.answer

    def verify(self, question: Question, attempt: str) -> Feedback:
        """Scripted feedback: the earliest wrong step of ``attempt`` (``error_feedback``), or the fixed correct
        feedback when no error is found. Raises ``ValueError`` when the attempt cannot be judged (no steps, or
        no error before it ends without a ``(Final response)`` step)."""
        raise NotImplementedError(f"task {self.name!r} has no scripted verifier; use an LLM teacher")

    def scripted_improvement(self, question: Question, attempt: str, feedback: Feedback) -> str | Dropped:
        """Scripted improvement: the steps of ``attempt`` before ``feedback.step`` verbatim, then a correct
        rewrite from that step through ``(Final response) ...``; ``Dropped`` when no such rewrite exists."""
        raise NotImplementedError(f"task {self.name!r} has no scripted verifier; use an LLM teacher")

    def slipped_rationale(self, question: Question, rng: random.Random) -> str:
        """The gold rationale with one slip that changes the final answer, as a teacher sampling at temperature 1
        might write it ("ft SI demo" data, reference §7). Tasks that support that baseline override this."""
        raise NotImplementedError(f"{type(self).__name__} writes no slipped rationales: the ft SI demo arm "
                                  "(callbacks.rollouts.TeacherDemos) supports multistep arithmetic and word sorting")

    def prompt(self, question: Question) -> str:
        """``Q: ...\\nAnswer: Let's think step by step.{info}\\n``: what the policy is asked to continue."""
        return f"Q: {question.question}\n{ANSWER_HEADER}{self.answer_info}\n"
