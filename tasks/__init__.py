"""Tasks: questions, gold rationales, answer parsing, buckets and (where verifiable) scripted feedback.

The task classes are imported on first access (PEP 562): task modules use ``feedback.base``, which itself imports
``tasks.base``, so importing them eagerly here would make ``import feedback`` circular.
"""

from importlib import import_module
from typing import Any

from tasks.base import Question, Task

_LAZY = {"MultistepArithmetic": "tasks.multistep_arithmetic", "WordSorting": "tasks.word_sorting",
         "DateUnderstanding": "tasks.multiple_choice", "LogicalDeduction": "tasks.multiple_choice"}

__all__ = ["DateUnderstanding", "LogicalDeduction", "MultistepArithmetic", "Question", "Task", "WordSorting"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
