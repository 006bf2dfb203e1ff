"""Test-time self-improvement evaluation: accuracy per bucket before and after the model fixes its own answers.

At the end of every TriPosT stage (warm-up and each iteration) the policy answers the task's test questions with
the self-improvement loop (greedy: attempt, own feedback, updated answer, at most ``max_rounds`` rounds, stopping
on the "correct" marker). "before" scores the first attempt, "after" the last one.

Two metrics. The headline is the reference evaluator's (``Task.answer_matches``: the final response states the
gold answer), so the numbers compare with the paper's. Beside it, ``strict/``: ``Task.is_correct``, which also
asks for the reference editor's content checks (the final number is the previous step's result; the chosen
option's text appears in the reasoning), the correctness the interactive editing uses.

Accuracies go to the logger per bucket, seen/unseen and total (torchmetrics, so they reduce across ranks); a few
trajectories are logged as text; the table of all stages is printed after each evaluation and at the end of
``fit``, and kept as ``{log_dir}/eval_table.json``, one row per stage: accuracies in % by ``before/<group>`` and
``after/<group>`` (headline) and ``strict/before/<group>``, ``strict/after/<group>``; ``revised/*``: how many answers
the model revised (wrote an update for), and of those how many went from wrong to right and from right to wrong
(headline metric), which says why "after" equals "before" when it does; ``self_check/*``: how often the model's own
feedback on its first attempt is right (strict, as the editing judges), see ``self_check``; ``loop/*``: the
generations continued, the updates asked for, and the answers still cut off after ``max_continuations``; ``examples/*``: the
training mix of the stage (a TriPosT row trained on gold demos alone is starred in the printed table).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import MeanMetric

from datamodules.examples import improvement_section
from tasks.base import CORRECT_MARKER, Question, Task, correct_feedback


class SelfImproveEval(Callback):
    """Evaluate accuracy before/after test-time self-improvement at each stage boundary.

    Args:
        max_rounds: self-improvement rounds at test time (None: the module's ``max_rounds``).
        num_questions: evaluate on the first N test questions only (None: all).
        num_samples_logged: trajectories shown as text in TensorBoard per evaluation.
    """

    def __init__(self, max_rounds: int | None = None, num_questions: int | None = None, num_samples_logged: int = 4):
        self.max_rounds = max_rounds
        self.num_questions = num_questions
        self.num_samples_logged = num_samples_logged
        self.rows: list[dict] = []  # one per evaluated stage; kept in checkpoints so a resumed table is whole

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = state_dict["rows"]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        questions = trainer.datamodule.test_questions()[: self.num_questions]
        budget, continuations = pl_module.hparams.max_new_tokens, pl_module.hparams.max_continuations
        for warning in token_budget_warnings(trainer.datamodule.task, trainer.datamodule.tokenizer, questions, budget,
                                             continuations):
            rank_zero_warn(warning)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stage = pl_module.finished_stage(trainer.current_epoch)
        if stage is None:
            return
        task = trainer.datamodule.task
        questions = trainer.datamodule.test_questions()[: self.num_questions]
        rounds = self.max_rounds or pl_module.hparams.max_rounds
        traces = pl_module.self_improve(task, questions, rounds, temperature=0.0, progress=f"eval stage {stage}")
        judged = {}  # (metric prefix, phase) -> correct per question
        for prefix, judge in (("", task.answer_matches), ("strict/", task.is_correct)):
            judged[prefix, "before"] = [judge(q, t.attempts[0]) for q, t in zip(questions, traces)]
            judged[prefix, "after"] = [judge(q, t.attempts[-1]) for q, t in zip(questions, traces)]
        row = {"stage": stage}
        for (prefix, phase), correct in judged.items():
            row |= accuracy_by_group(task, questions, correct, f"{prefix}{phase}")
        row |= revisions(traces, judged["", "before"], judged["", "after"])
        row["rounds"] = sum(len(t.attempts) for t in traces) / max(len(traces), 1)
        # how often the loop went past one generation per round (modules.tripost.TriPosTModule.max_continuations)
        row["loop/continuations"] = float(sum(t.continuations for t in traces))
        row["loop/forced_updates"] = float(sum(t.forced_updates for t in traces))
        row["loop/cut_off"] = float(sum(t.cut_off for t in traces))
        row |= {f"examples/{kind}": float(n) for kind, n in trainer.datamodule.last_counts.items()}  # what it trained on
        row |= self_check(judged["strict/", "before"], [t.feedbacks[0] if t.feedbacks else None for t in traces])
        self.rows = [r for r in self.rows if r["stage"] != stage] + [row]
        for key, value in row.items():
            if key != "stage" and not key.startswith("examples/"):  # the DataModule logs the mix as data/examples_*
                pl_module.log(f"eval/{key}", value, rank_zero_only=True)
        self._log_samples(trainer, task, questions, traces, stage)
        rank_zero_info(format_table(self.rows, task))
        save_run_json(trainer, "eval_table.json", sorted(self.rows, key=lambda r: r["stage"]))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.rows:
            rank_zero_info("\nFinal accuracy (%), before -> after test-time self-improvement (headline: the final "
                           "response's answer, as the paper scores; strict: with the editing's content checks):\n"
                           + format_table(self.rows, trainer.datamodule.task))

    def _log_samples(self, trainer: Trainer, task: Task, questions: list[Question], traces, stage: int) -> None:
        if not isinstance(trainer.logger, TensorBoardLogger):
            return
        blocks = []
        for q, t in list(zip(questions, traces))[: self.num_samples_logged]:
            turns = []
            for i, (attempt, feedback) in enumerate(zip(t.attempts, t.feedbacks)):
                turns.append((f"{'attempt' if i == 0 else 'update'} {i + 1}", attempt))
                if feedback:
                    turns.append(("own feedback", feedback))
            blocks.append(trajectory_markdown(f"**{q.id}** ({q.bucket}), gold `{q.answer}`", task.prompt(q), turns))
        trainer.logger.experiment.add_text("eval/samples", "\n\n---\n\n".join(blocks), global_step=stage)


def save_run_json(trainer: Trainer, name: str, data) -> None:
    """Write ``data`` to ``{trainer.log_dir}/{name}`` (for the experiment runners). Call it on every rank:
    ``trainer.log_dir`` is a collective under distributed strategies; rank 0 writes."""
    folder = Path(trainer.log_dir or ".")
    if trainer.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(data, indent=1))


def trajectory_markdown(title: str, prompt: str, turns: list[tuple[str, str]]) -> str:
    """A trajectory as TensorBoard markdown: title, the prompt and each ``(label, text)`` turn as code blocks."""
    lines = [title, "", _indent(prompt.strip())]
    for label, text in turns:
        lines += ["", f"*{label}*:", "", _indent(text)]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "    " + text.replace("\n", "\n    ")


def accuracy_by_group(task: Task, questions: list[Question], correct: list[bool], phase: str) -> dict[str, float]:
    """Accuracy (%) per fine bucket, seen, unseen and total, as ``{"before/l3-4d2": 41.0, ...}``."""
    groups: dict[str, MeanMetric] = {}
    for q, ok in zip(questions, correct):
        for name in (q.bucket, "seen" if q.seen else "unseen", "total"):
            groups.setdefault(name, MeanMetric()).update(torch.tensor(float(ok)))
    return {f"{phase}/{name}": 100 * metric.compute().item() for name, metric in groups.items()}


def revisions(traces, before: list[bool], after: list[bool]) -> dict[str, float]:
    """Counts over the evaluated questions: ``revised/answers`` (the model wrote at least one update),
    ``revised/to_right`` (first attempt wrong, last right) and ``revised/to_wrong`` (first right, last wrong)."""
    revised = [len(t.attempts) > 1 for t in traces]
    return {"revised/answers": float(sum(revised)),
            "revised/to_right": float(sum(r and not b and a for r, b, a in zip(revised, before, after))),
            "revised/to_wrong": float(sum(r and b and not a for r, b, a in zip(revised, before, after)))}


def token_budget_warnings(task: Task, tokenizer, questions: list[Question], max_new_tokens: int,
                          max_continuations: int = 0) -> list[str]:
    """What a round's generation budget (attempt, then feedback and an updated answer: ``max_new_tokens`` per call,
    continued at most ``max_continuations`` times) leaves out, judged by the gold rationales' lengths: answers cut
    off before their final response, and answers that test-time self-improvement has no room to revise."""
    budget = max_new_tokens * (1 + max_continuations)
    lengths, needed = [], []
    for q in questions:
        rationale = task.gold_rationale(q).strip()
        attempt = len(tokenizer.encode(rationale, add_special_tokens=False))
        # as training lays it out; a lower bound: a real feedback names an error, and is longer than "correct"
        section = improvement_section(task.prompt(q), correct_feedback(rationale), rationale)
        lengths.append(attempt)
        needed.append(len(tokenizer.encode(f"{rationale}\n{section}", add_special_tokens=False)))
    flag = "raise --model.init_args.max_new_tokens"
    limit = f"max_new_tokens={max_new_tokens}"
    if max_continuations:
        limit += f" and max_continuations={max_continuations} ({budget} tokens a round)"
    warnings = []
    cut = [q for q, n in zip(questions, lengths) if n > budget]
    if cut:
        warnings.append(f"{limit}: {len(cut)} of {len(questions)} test questions "
                        f"({sum(q.seen for q in cut)} seen) have gold answers longer than that (up to {max(lengths)} "
                        f"tokens), so attempts at them are cut off before their final response and count as wrong; {flag}")
    no_room = sum(n > budget for n in needed)
    if no_room:
        fits = -(-max(needed) // (1 + max_continuations))  # per call
        warnings.append(f"{limit}: for {no_room} of {len(questions)} test questions an attempt, its feedback and "
                        "an updated answer do not fit in one round's generation, so test-time self-improvement "
                        f"cannot revise them; {flag} (at least {fits} fits them all)")
    return warnings


def self_check(correct: list[bool], feedbacks: list[str | None]) -> dict[str, float]:
    """How well the model judges its own first attempt (%): ``no_feedback`` (it wrote none after it),
    ``wrong_called_correct`` (of its wrong attempts, those its feedback calls correct: these are never revised) and
    ``right_called_wrong`` (of its correct attempts, those its feedback finds an error in). A rate whose
    denominator is empty is left out."""
    rates = {name: MeanMetric() for name in ("no_feedback", "wrong_called_correct", "right_called_wrong")}
    for metric in rates.values():  # every rank computes every rate (a collective under DDP), even an empty one
        metric.update(torch.tensor(0.0), weight=0.0)
    for ok, feedback in zip(correct, feedbacks):
        rates["no_feedback"].update(torch.tensor(float(feedback is None)))
        if feedback is not None:
            says_correct = CORRECT_MARKER in feedback
            rates["right_called_wrong" if ok else "wrong_called_correct"].update(torch.tensor(float(ok != says_correct)))
    values = {f"self_check/{name}": 100 * metric.compute().item() for name, metric in rates.items()}
    return {name: value for name, value in values.items() if not math.isnan(value)}


def format_table(rows: list[dict], task: Task) -> str:
    """One line per stage: ``before -> after`` accuracy (headline metric) for every bucket, seen, unseen and total,
    the answers revised (and of them, to right / to wrong), then the strict metric's seen, unseen and total."""
    columns = [b for b in task.buckets() if any(f"before/{b}" in r for r in rows)] + ["seen", "unseen", "total"]
    columns = [c for c in columns if any(f"before/{c}" in r for r in rows)]
    width = max(13, *(len(c) for c in columns))
    header = f"{'stage':<14}" + "".join(f"{c:>{width + 2}}" for c in columns) + f"{'revised (+/-)':>16}"
    strict = [c for c in ("seen", "unseen", "total") if any(f"strict/before/{c}" in r for r in rows)]
    header += "  |" + "".join(f"{'strict ' + c:>{width + 2}}" for c in strict)
    lines = [header, "-" * len(header)]
    gold_only = [r["stage"] for r in rows if r["stage"] > 0 and "examples/gold" in r
                 and not r.get("examples/improvement") and not r.get("examples/non_improvement")]
    for row in sorted(rows, key=lambda r: r["stage"]):
        name = "ft rationale" if row["stage"] == 0 else f"TriPosT t={row['stage']}"
        name += "*" if row["stage"] in gold_only else ""
        cells = "".join(f"{_cell(row.get(f'before/{c}'), row.get(f'after/{c}')):>{width + 2}}" for c in columns)
        revised = (f"{row['revised/answers']:.0f} (+{row['revised/to_right']:.0f}/-{row['revised/to_wrong']:.0f})"
                   if "revised/answers" in row else "-")
        cells += f"{revised:>16}  |"
        cells += "".join(f"{_cell(row.get(f'strict/before/{c}'), row.get(f'strict/after/{c}')):>{width + 2}}"
                         for c in strict)
        lines.append(f"{name:<14}{cells}")
    if gold_only:
        lines.append("* trained on gold demos alone: its shard gave no examples (--data.init_args.min_examples=0)")
    return "\n".join(lines)


def _cell(before: float | None, after: float | None) -> str:
    if before is None:
        return "-"
    return f"{before:.1f} -> {after:.1f}"
