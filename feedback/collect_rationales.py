"""Collect gold rationales from a teacher LLM for tasks that have no scripted ones (Date Understanding, Logical
Deduction), as TriPosT did with Codex: a few-shot rationale per question, kept only if it chooses the gold option.

    python -m feedback.collect_rationales --config configs/tripost/date_understanding_rationales.yaml
    python -m feedback.collect_rationales --task tasks.DateUnderstanding --teacher feedback.openai.OpenAITeacher \\
        --teacher.model my-model --teacher.base_url http://127.0.0.1:8000/v1 --out runs/du/rationales.jsonl

The output is an interaction-log shard (one episode per question: the rationale as an ``attempt`` turn by the
teacher, outcome ``correct`` (and the gold-based "correct" feedback) when kept, ``dropped`` with the reason otherwise). Point the training config at it with
``task.init_args.rationales``. The file is never overwritten; with the teacher's cache a second collection into a
new file costs no calls.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, as cli.py does

from jsonargparse import CLI  # noqa: E402

from datamodules.interaction_log import Episode, Turn, write_shard  # noqa: E402
from feedback.base import Dropped, TeacherUnavailable  # noqa: E402
from feedback.llm import LLMTeacher  # noqa: E402
from tasks.base import correct_feedback  # noqa: E402
from tasks.multiple_choice import MultipleChoiceTask  # noqa: E402


def collect(task: MultipleChoiceTask, teacher: LLMTeacher, out: str, num_questions: int | None = None) -> Path:
    """Ask ``teacher`` for a rationale to every question of ``task``'s rationale pool and write them to ``out``.

    Args:
        task: the task whose questions need rationales (``tasks.DateUnderstanding``, ``tasks.LogicalDeduction``).
        teacher: the LLM teacher writing them (``feedback.openai.OpenAITeacher``, ``feedback.local.LocalModelTeacher``).
        out: path of the interaction-log shard to write (must not exist).
        num_questions: only the first N questions of the pool (None: all).
    """
    path = Path(out)
    if path.exists():
        raise FileExistsError(f"{path} already exists; rationale shards are never overwritten: choose another --out")
    questions = task.pool()[:num_questions]
    answers = teacher.rationales(task, questions)
    dead = sum(isinstance(a, Dropped) and a.unavailable for a in answers)
    if dead:  # a shard is never rewritten, so write none that a rerun could complete
        raise TeacherUnavailable(
            f"{dead} of {len(questions)} rationale requests got no answer from the teacher (e.g. "
            f"{next(a.reason for a in answers if isinstance(a, Dropped) and a.unavailable)}); nothing was written to "
            f"{path}. The answers received are cached: rerun the same command when the endpoint is back, and only "
            "the rest are asked")
    episodes = []
    for question, answer in zip(questions, answers):
        text = "" if isinstance(answer, Dropped) else answer
        if isinstance(answer, Dropped):
            outcome, reason = "dropped", f"teacher: {answer.reason}"
        elif task.is_correct(question, answer):
            outcome, reason = "correct", None
        else:
            outcome, reason = "dropped", f"chose {task.extract_answer(answer)}, gold {question.answer} (or unsupported)"
        turns = [Turn("attempt", text, teacher.name)]
        if outcome == "correct":  # the gold-based verdict, as on every correct episode
            turns.append(Turn("feedback", correct_feedback(text), "gold"))
        episodes.append(Episode(id=f"{question.id}/rationale", task=task.name, iteration=0, prompt=task.prompt(question),
                                turns=tuple(turns), outcome=outcome, question_id=question.id,
                                bucket=question.bucket, gold=question.answer, reason=reason))
    write_shard(path, episodes)
    outcomes = Counter(e.outcome for e in episodes)
    print(f"{path}: {outcomes['correct']} of {len(episodes)} rationales kept; teacher usage: {teacher.usage()}")
    return path


if __name__ == "__main__":
    CLI(collect, as_positional=False)
