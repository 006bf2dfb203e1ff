"""LLM teachers: TriPosT's few-shot FBK and IMP prompts (reference §3.5) around any text-completion backend.

A backend (``OpenAITeacher`` over HTTP, ``LocalModelTeacher`` with transformers) only implements ``complete``:
prompts in, completions out. Everything TriPosT-specific lives here:

* **Feedback** (FBK): the tabular prompt ``... Earliest error step:``; the completion's three lines
  ``(k)`` / ``Error segment: "..."`` / ``Error reason: ...`` become ``Step (1) to step (k-1) are correct. In step
  (k) the part "..." is incorrect. This is because ...``. With ``scripted_feedback`` the task's verifier writes the
  feedback instead (TriPosT's setting for multistep arithmetic and word sorting) and the LLM only improves.
* **Improvement** (IMP): the prompt ends in ``Updated Answer: ...`` followed by the attempt's steps before the wrong
  one, so the LLM continues from the wrong step; the steps before it are kept verbatim by construction.
* **Rationales**: for tasks without scripted rationales (Date Understanding, Logical Deduction), a plain few-shot
  prompt; ``feedback.collect_rationales`` keeps those that choose the gold option.

Whether an attempt is correct is never asked: it comes from the gold answer. A completion that does not parse is
``Dropped`` with a counted reason (``usage()["off_format"]``), never an exception.

Prompts are text files, ``feedback/prompts/{task}/{feedback,improve,rationale}.txt``, with the placeholders
``{question}``, ``{answer_info}``, ``{attempt}``, ``{feedback}`` and ``{partial}``; ``prompts_dir`` points at a
folder of the same layout whose files replace the packaged ones.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from feedback.base import Dropped, Feedback, Teacher, error_feedback
from feedback.scripted import ScriptedTeacher
from tasks.base import ANSWER_HEADER, Question, Task, split_steps

PACKAGED_PROMPTS = Path(__file__).resolve().parent / "prompts"
END = "[END]"
PLACEHOLDERS = {
    "feedback": ("{question}", "{answer_info}", "{attempt}"),
    "improve": ("{question}", "{answer_info}", "{attempt}", "{feedback}", "{partial}"),
    "rationale": ("{question}", "{answer_info}"),
}
_TABLE = re.compile(
    r'^\s*\(?(?P<step>[^()\n]+?)\)?\s*\n\s*Error segment:\s*(?P<segment>.+?)\s*\n\s*Error reason:\s*(?P<reason>.+?)\s*$'
)


class LLMTeacher(Teacher):
    """TriPosT's prompts and parsing; subclasses supply ``complete`` (and ``name``, the model recorded in logs).

    Args:
        prompts_dir: folder with ``{task}/{feedback,improve,rationale}.txt`` files replacing the packaged prompts.
        scripted_feedback: error feedback from the task's scripted verifier, the LLM only improves (TriPosT's
            setting for multistep arithmetic and word sorting).
        feedback_temperature: sampling temperature of feedback calls (the reference: 0).
        improve_temperature: sampling temperature of improvement calls (the reference: 0.7).
        rationale_temperature: sampling temperature of rationale calls.
        max_tokens: most completion tokens per call.
    """

    def __init__(self, prompts_dir: str | None = None, scripted_feedback: bool = False,
                 feedback_temperature: float = 0.0, improve_temperature: float = 0.7,
                 rationale_temperature: float = 0.0, max_tokens: int = 512) -> None:
        self.prompts_dir = Path(prompts_dir).expanduser() if prompts_dir else None
        self.scripted_feedback = scripted_feedback
        self.feedback_temperature = feedback_temperature
        self.improve_temperature = improve_temperature
        self.rationale_temperature = rationale_temperature
        self.max_tokens = max_tokens
        self.off_format: Counter[str] = Counter()
        self._templates: dict[tuple[str, str], str] = {}

    @abstractmethod
    def complete(self, prompts: Sequence[str], temperature: float, max_tokens: int) -> list[str | Dropped]:
        """One completion per prompt, in order, generation stopped at ``[END]``; ``Dropped`` for an item the backend
        could not answer usably. Raises ``TeacherUnavailable`` when it cannot answer anything."""

    def usage(self) -> dict[str, float]:
        """Counters since the last ``reset_usage`` (backends add theirs): off-format answers, by kind."""
        return {"off_format": float(sum(self.off_format.values()))} | {
            f"off_format/{kind}": float(n) for kind, n in sorted(self.off_format.items())
        }

    def reset_usage(self) -> None:
        self.off_format.clear()

    # ---- prompts ------------------------------------------------------------------------------------------------

    def template(self, task: Task, kind: str) -> str:
        """The prompt template ``kind`` of ``task``: ``prompts_dir`` first, then the packaged one."""
        if (task.name, kind) not in self._templates:
            candidates = [d / task.name / f"{kind}.txt" for d in (self.prompts_dir, PACKAGED_PROMPTS) if d is not None]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                hint = " or set scripted_feedback: true" if kind == "feedback" else ""
                raise FileNotFoundError(f"no {kind} prompt for task {task.name!r}: looked for "
                                        f"{', '.join(map(str, candidates))}; write one (see feedback/prompts/README.md) "
                                        f"and point --...teacher.init_args.prompts_dir at its folder{hint}")
            text = path.read_text(encoding="utf-8")
            missing = [p for p in PLACEHOLDERS[kind] if p not in text]
            if missing:
                raise ValueError(f"{path}: prompt lacks the placeholder(s) {', '.join(missing)}")
            self._templates[(task.name, kind)] = text
        return self._templates[(task.name, kind)]

    def render(self, task: Task, kind: str, question: Question, **fields: str) -> str:
        text = self.template(task, kind)
        values = {"question": question.question, "answer_info": task.answer_info, **fields}
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return text

    # ---- the teacher interface ----------------------------------------------------------------------------------

    def feedback(self, task: Task, items: Sequence[tuple[Question, str]]) -> list[Feedback | Dropped]:
        if self.scripted_feedback:
            return ScriptedTeacher().feedback(task, items)
        prompts = [self.render(task, "feedback", q, attempt=attempt.strip()) for q, attempt in items]
        answers = self.complete(prompts, self.feedback_temperature, self.max_tokens)
        return [a if isinstance(a, Dropped) else self._count(parse_feedback_table(a, attempt))
                for a, (_, attempt) in zip(answers, items)]

    def improve(self, task: Task, items: Sequence[tuple[Question, str, Feedback]]) -> list[str | Dropped]:
        prompts, prefixes = [], []
        for question, attempt, feedback in items:
            prefix = steps_before(attempt, feedback.step)
            partial = "".join("\n" + line for line in prefix)
            prompts.append(self.render(task, "improve", question, attempt=attempt.strip(), feedback=feedback.text,
                                       partial=partial))
            prefixes.append(prefix)
        answers = self.complete(prompts, self.improve_temperature, self.max_tokens)
        return [a if isinstance(a, Dropped) else self._count(assemble_steps(prefix, a, "improvement"))
                for a, prefix in zip(answers, prefixes)]

    def rationales(self, task: Task, questions: Sequence[Question]) -> list[str | Dropped]:
        """A few-shot rationale for each question (correctness is the caller's business)."""
        prompts = [self.render(task, "rationale", q) for q in questions]
        answers = self.complete(prompts, self.rationale_temperature, self.max_tokens)
        return [a if isinstance(a, Dropped) else self._count(assemble_steps([], a, "rationale")) for a in answers]

    def _count(self, answer):
        if isinstance(answer, Dropped):
            self.off_format[answer.reason.split(":")[0]] += 1
        return answer


def parse_feedback_table(completion: str, attempt: str) -> Feedback | Dropped:
    """The tabular FBK completion (what follows ``Earliest error step:``) as TriPosT feedback on ``attempt``."""
    match = _TABLE.match(completion.split(END)[0].strip("\n"))
    if not match:
        return Dropped("off-format feedback: expected '(k)' / 'Error segment: ...' / 'Error reason: ...'")
    step, segment = match["step"].strip(), match["segment"].strip()
    if len(segment) >= 2 and segment[0] == segment[-1] == '"':  # one pair of quotes: the segment may quote too
        segment = segment[1:-1].strip()
    labels = [label for label, _ in split_steps(attempt)]
    if step not in labels:
        return Dropped(f"off-format feedback: step ({step}) is not a step of the attempt")
    line = dict(split_steps(attempt))[step]
    if not segment or segment not in line:
        return Dropped(f"off-format feedback: the error segment is not quoted from step ({step})")
    at = labels.index(step)
    return error_feedback(labels[at - 1] if at > 0 else None, step, segment, match["reason"])


def steps_before(attempt: str, step: str | None) -> list[str]:
    """The attempt's step lines before step ``step`` (all of them if it is not a step)."""
    steps = split_steps(attempt)
    labels = [label for label, _ in steps]
    return [line for _, line in steps[: labels.index(step) if step in labels else len(steps)]]


def assemble_steps(prefix: list[str], completion: str, kind: str) -> str | Dropped:
    """``prefix`` lines plus the completion's step lines up to ``[END]`` (TriPosT's ``clean_pred``: stray text,
    a new question or a second answer header end it)."""
    lines = list(prefix)
    for raw in completion.split(END)[0].splitlines():
        line = raw.strip()
        if line.startswith(("Q:", "Feedback:", "Updated Answer:", ANSWER_HEADER)):
            break
        if split_steps(line):
            lines.append(line)
            if line.startswith("(Final response)"):
                break
    if len(lines) == len(prefix) or not lines[-1].startswith("(Final response)"):
        return Dropped(f"off-format {kind}: no steps ending in '(Final response) ...'")
    return "\n".join(lines)
