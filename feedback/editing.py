"""Interactive trajectory editing (TriPosT reference §2.2 b): the teacher edits what the policy wrote.

For each policy trace ``att_1, fb_1, att_2, ...`` (fb_i the policy's own feedback, possibly absent):

1. Walk the attempts. Correctness comes from the gold answer; for a wrong attempt the teacher writes feedback.
   The first attempt whose own feedback is missing or disagrees with the teacher's (different step, or neither
   segment contains the other) is the *edit point*. Agreeing turns are kept verbatim, so a policy that fixed
   itself keeps its whole trajectory (the reference code's re-prompting lost that history, reference §10.2).
2. At the edit point the policy's feedback is replaced by the teacher's; if the attempt is correct the episode
   ends there. Otherwise the teacher improves the attempt (at most ``max_updates`` times) until the gold answer
   says it is correct. Each improvement must keep the steps before the wrong one, change the wrong step, drop
   the wrong segment and end in a final response (``check_improvement``); one that fails this is rejected and
   the episode fails (the reference drops it). A step-numbering error (the quoted part is the step's own label,
   ``"(4)"``) is fixed by renumbering that step, so there the label, not the line, must change.
3. An improvement whose new feedback makes no progress (same step and segment, or an earlier step) is kept as
   the next attempt to improve, but flags the episode (the reference's ``bad_improvement``). Outcome:

   * correct in the end, no flag: ``improved``, every turn kept;
   * correct in the end, flagged: ``feedback_only``, only the turns up to the teacher's first feedback are kept
     (the attempt it judged and, before it, any turns the policy got right itself: the reference's
     ``[question, attempt, first feedback]`` merged with that prefix);
   * never correct within ``max_updates``: ``failed`` with the reason (the reference drops it).

Teacher calls are batched across all episodes in each round, so LLM teachers can overlap requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from datamodules.interaction_log import Episode, Turn
from feedback.base import Dropped, Feedback, Teacher
from tasks.base import FINAL_RESPONSE, Question, Task, correct_feedback, split_steps


@dataclass
class _Edit:
    question: Question
    attempts: list[str]
    feedbacks: list[str | None]
    turns: list[Turn] = field(default_factory=list)
    position: int = 0
    outcome: str | None = None
    reason: str | None = None
    current: str = ""
    current_feedback: Feedback | None = None
    updates: int = 0
    #: how many turns end at the teacher's first feedback: all a flagged (feedback-only) episode keeps
    first_feedback_turns: int = 0
    #: the reference's ``bad_improvement``: some improvement made no progress
    bad_improvement: bool = False


def edit_traces(
    task: Task,
    teacher: Teacher,
    questions: Sequence[Question],
    traces: Sequence[tuple[list[str], list[str | None]]],
    iteration: int,
    prompts: Sequence[str],
    max_updates: int = 5,
    policy_name: str = "policy",
) -> list[Episode]:
    """Edit every (attempts, own feedbacks) trace into an interaction-log episode with an outcome."""
    edits = [_Edit(q, list(a), list(f)) for q, (a, f) in zip(questions, traces)]
    for edit in edits:
        if not edit.attempts or not edit.attempts[0].strip():
            edit.outcome, edit.reason = "dropped", "empty attempt"
            edit.turns = [Turn("attempt", "", policy_name)]  # logged as it was: the policy wrote nothing
    _walk(task, teacher, edits, policy_name)
    _improve(task, teacher, edits, max_updates)
    return [
        Episode(
            id=f"{e.question.id}/it{iteration}",
            task=task.name,
            iteration=iteration,
            prompt=prompt,
            turns=tuple(e.turns),
            outcome=e.outcome or "failed",
            question_id=e.question.id,
            bucket=e.question.bucket,
            gold=e.question.answer,
            reason=e.reason,
        )
        for e, prompt in zip(edits, prompts)
    ]


def _walk(task: Task, teacher: Teacher, edits: list[_Edit], policy_name: str) -> None:
    """Step 1: find each trace's edit point, asking the teacher for feedback one attempt position at a time."""
    walking = [e for e in edits if e.outcome is None]
    while walking:
        wrong = [e for e in walking if not task.is_correct(e.question, e.attempts[e.position])]
        answers = teacher.feedback(task, [(e.question, e.attempts[e.position]) for e in wrong]) if wrong else []
        teacher_feedback = {id(e): a for e, a in zip(wrong, answers)}
        still_walking = []
        for e in walking:
            attempt = e.attempts[e.position]
            role = "attempt" if e.position == 0 else "improvement"
            e.turns.append(Turn(role, attempt, policy_name))
            verdict = teacher_feedback.get(id(e)) or Feedback(correct_feedback(attempt), correct=True)
            if isinstance(verdict, Dropped):
                e.outcome, e.reason = "dropped", f"teacher feedback: {verdict.reason}"
                continue
            own = Feedback.parse(e.feedbacks[e.position]) if e.feedbacks[e.position] else None
            has_next = e.position + 1 < len(e.attempts)
            if own is not None and own.agrees_with(verdict) and not verdict.correct and has_next:
                e.turns.append(Turn("feedback", own.text, policy_name))  # the policy was right: keep its turn
                e.position += 1
                still_walking.append(e)
                continue
            e.turns.append(Turn("feedback", verdict.text, teacher.name if not verdict.correct else "gold"))
            if verdict.correct:
                e.outcome = "correct" if e.position == 0 else "improved"
            else:
                e.current, e.current_feedback = attempt, verdict
                e.first_feedback_turns = len(e.turns)
        walking = still_walking


def _improve(task: Task, teacher: Teacher, edits: list[_Edit], max_updates: int) -> None:
    """Step 2: improvement rounds until the gold answer says correct, or ``max_updates`` are spent."""
    pending = [e for e in edits if e.outcome is None]
    while pending:
        answers = teacher.improve(task, [(e.question, e.current, e.current_feedback) for e in pending])
        checked = []
        for e, answer in zip(pending, answers):
            e.updates += 1
            if isinstance(answer, Dropped) and answer.unavailable:  # no answer at all: not the attempt's fault
                e.outcome, e.reason = "dropped", f"teacher improvement: {answer.reason}"
                continue
            problem = answer.reason if isinstance(answer, Dropped) else check_improvement(e.current, answer, e.current_feedback)
            if problem:
                e.outcome, e.reason = "failed", f"improvement rejected: {problem}"
            else:
                checked.append((e, answer))
        wrong = [(e, a) for e, a in checked if not task.is_correct(e.question, a)]
        verdicts = teacher.feedback(task, [(e.question, a) for e, a in wrong]) if wrong else []
        verdict_of = {id(e): v for (e, _), v in zip(wrong, verdicts)}
        still_pending = []
        for e, answer in checked:
            verdict = verdict_of.get(id(e)) or Feedback(correct_feedback(answer), correct=True)
            if isinstance(verdict, Dropped):  # no answer at all is not the improvement's fault: dropped, not failed
                e.outcome, e.reason = "dropped" if verdict.unavailable else "failed", f"teacher feedback: {verdict.reason}"
                continue
            if not verdict.correct and not _progress(e.current, e.current_feedback, answer, verdict):
                e.bad_improvement = True  # the reference keeps improving; the flag only decides what is kept
            e.turns += [Turn("improvement", answer, teacher.name), Turn("feedback", verdict.text, teacher.name if not verdict.correct else "gold")]
            if verdict.correct and e.bad_improvement:
                e.turns = e.turns[: e.first_feedback_turns]
                e.outcome, e.reason = "feedback_only", "an improvement made no progress: kept the first feedback only"
            elif verdict.correct:
                e.outcome = "improved"
            elif e.updates >= max_updates:
                stalled = " (an improvement made no progress)" if e.bad_improvement else ""
                e.outcome, e.reason = "failed", f"not correct after max_updates={max_updates} improvements{stalled}"
            else:
                e.current, e.current_feedback = answer, verdict
                still_pending.append(e)
        pending = still_pending


def check_improvement(previous: str, improved: str, feedback: Feedback) -> str | None:
    """Reference §2.2 step 6: what is wrong with an improvement, or None if it is legitimate."""
    new_steps, old_steps = split_steps(improved), split_steps(previous)
    if not new_steps or new_steps[-1][0] != "Final response" or "the answer is" not in new_steps[-1][1]:
        return "does not end with a '(Final response) ... the answer is ...' line"
    if "Q:" in improved:
        return "contains a new question"
    if improved.strip() == previous.strip():
        return "identical to the previous attempt"
    return _rewritten_step(old_steps, new_steps, feedback)[1]


def _rewritten_step(old_steps: list[tuple[str, str]], new_steps: list[tuple[str, str]],
                    feedback: Feedback) -> tuple[int | None, str | None]:
    """``(k, None)`` with ``k`` the index in the previous attempt of the wrong step the improvement rewrote, or
    ``(None, problem)``.

    Labels can repeat in model output (a numbering slip writes a second ``(2)``), so every step carrying the
    blamed label is a candidate: the improvement must keep the steps before one of them verbatim and rewrite it.
    """
    candidates = [i for i, (label, _) in enumerate(old_steps) if label == feedback.step]
    if not candidates:
        return None, f"the feedback's step ({feedback.step}) is not a step of the attempt"
    problem = None
    for k in candidates:
        if [line for _, line in new_steps[:k]] != [line for _, line in old_steps[:k]]:
            # later candidates keep an even longer prefix: report the nearest candidate's problem if there was one
            return None, problem or f"changed the steps before step ({feedback.step})"
        problem = _rewrite_problem(old_steps[k], new_steps[k] if k < len(new_steps) else None, feedback)
        if problem is None:
            return k, None
    return None, problem


def _rewrite_problem(old: tuple[str, str], new: tuple[str, str] | None, feedback: Feedback) -> str | None:
    """What is wrong with ``new``, the step at the wrong step's place in the improvement (None: nothing)."""
    if new is None:
        return f"ends before step ({feedback.step})"
    label, line = new
    if line == old[1]:
        return f"did not change step ({feedback.step})"
    if not feedback.segment or feedback.step == FINAL_RESPONSE.strip("()"):
        return None
    if feedback.segment == f"({feedback.step})":
        # a numbering error quotes the step's own label: renumbering fixes it, and the label opens every step line
        still_wrong = label == feedback.step
    else:
        still_wrong = feedback.segment in line
    return f"step ({feedback.step}) still contains the wrong part {feedback.segment!r}" if still_wrong else None


def _progress(previous: str, old: Feedback, improved: str, new: Feedback) -> bool:
    """The new error must lie after the old one (or be a different segment of the same step).

    Compared by position, not label: fixing a numbering error changes the labels (a wrong ``(4)`` becomes ``(3)``).
    """
    old_at = _rewritten_step(split_steps(previous), split_steps(improved), old)[0]
    labels = [label for label, _ in split_steps(improved)]
    if old_at is None or new.step not in labels:
        return True
    # the steps before old_at were judged correct and kept, so a later step with the blamed label is the one meant
    new_at = next((i for i in range(old_at, len(labels)) if labels[i] == new.step), labels.index(new.step))
    return new_at > old_at or (new_at == old_at and new.segment != old.segment)
