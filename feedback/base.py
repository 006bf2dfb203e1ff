"""The teacher interface: feedback on a wrong attempt and an improvement that fixes it.

TriPosT's teacher (FBK + IMP, reference §2.2) is a script for verifiable tasks and an LLM otherwise. Whether an
attempt is correct is always decided from the gold answer (``Task.is_correct``); a teacher is only asked to explain
errors and to rewrite attempts from the first wrong step on. Both calls are batched so that LLM teachers can keep
many requests in flight.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.base import CORRECT_MARKER, Question, Task

_ERROR_STEP = re.compile(r"In step \(([^)]+)\) the part")
_ERROR_SEGMENT = re.compile(r'the part "(.*)" is incorrect')


@dataclass(frozen=True)
class Feedback:
    """One feedback turn (text without the ``Feedback: `` header).

    ``correct`` feedback is TriPosT's fixed string; error feedback names the earliest wrong ``step`` (a label such
    as ``"3"``, ``"3.2"`` or ``"Final response"``) and the wrong ``segment`` quoted from it.
    """

    text: str
    correct: bool
    step: str | None = None
    segment: str | None = None

    @classmethod
    def parse(cls, text: str) -> Feedback | None:
        """Parse feedback written by anyone (policy or teacher); None if it is in neither TriPosT format."""
        text = text.strip()
        if CORRECT_MARKER in text:
            return cls(text=text, correct=True)
        step, segment = _ERROR_STEP.search(text), _ERROR_SEGMENT.search(text)
        if not (step and segment and "because" in text and "\n" not in text):
            return None
        return cls(text=text, correct=False, step=step.group(1), segment=segment.group(1).strip())

    def agrees_with(self, other: Feedback) -> bool:
        """TriPosT's agreement test: both correct, or same error step and one segment contains the other."""
        if self.correct or other.correct:
            return self.correct and other.correct
        if self.step != other.step or not self.segment or not other.segment:
            return False
        return self.segment in other.segment or other.segment in self.segment


def error_feedback(previous_step: str | None, step: str, segment: str, reason: str) -> Feedback:
    """Format error feedback as TriPosT does (reference §3.4).

    ``previous_step`` is the label of the step before the wrong one (None when the first step is wrong):
    ``Step (1) to step (k-1) are correct. In step (k) the part "..." is incorrect. This is because ...``.
    """
    reason = reason.strip().rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    head = ""
    if previous_step == "1":
        head = "Step (1) is correct. "
    elif previous_step is not None:
        head = f"Step (1) to step ({previous_step}) are correct. "
    text = f'{head}In step ({step}) the part "{segment}" is incorrect. This is because {reason}.'
    return Feedback(text=text, correct=False, step=step, segment=segment)


class TeacherUnavailable(RuntimeError):
    """The teacher cannot answer at all (endpoint down after every retry, bad credentials): the round fails."""


@dataclass(frozen=True)
class Dropped:
    """A teacher answer that cannot be used; ``reason`` is counted and written to the interaction log.
    ``unavailable``: the teacher gave no answer at all (a dead request), so asking again later may succeed."""

    reason: str
    unavailable: bool = False


class Teacher(ABC):
    """Writes feedback on wrong attempts and improvements that fix them, in TriPosT's formats."""

    #: who produced the turns, recorded in the interaction log (``"script"``, a model name, ...)
    name: str

    @abstractmethod
    def feedback(self, task: Task, items: Sequence[tuple[Question, str]]) -> list[Feedback | Dropped]:
        """Error feedback for each (question, wrong attempt); the attempt is numbered steps, no header."""

    @abstractmethod
    def improve(self, task: Task, items: Sequence[tuple[Question, str, Feedback]]) -> list[str | Dropped]:
        """For each (question, attempt, error feedback): a new attempt that keeps every step before the wrong one
        verbatim and rewrites from the wrong step through ``(Final response) ...``."""

    def usage(self) -> dict[str, float]:
        """Counters since the last ``reset_usage`` (calls, tokens, ...), logged as ``teacher/*`` per rollout round;
        a scripted teacher has none."""
        return {}

    def reset_usage(self) -> None:
        """Start counting a new round."""


class Judge(ABC):
    """PIT's feedback: how much better each response is than its reference (a gap reward, higher is better)."""

    #: who scored, recorded in logs
    name: str

    @abstractmethod
    def score(self, items: Sequence[tuple[str, str, str]]) -> list[float]:
        """Gap rewards of ``(x, y_ref, y)`` triples."""

    def usage(self) -> dict[str, float]:
        """Counters since the last ``reset_usage``, logged as ``teacher/*`` per rollout round."""
        return {}

    def reset_usage(self) -> None:
        """Start counting a new round."""
