"""An LLM as PIT's judge instead of the reward model: pairwise "which is better", turned into a gap reward.

For each (x, y_ref, y) the judge sees both responses (``feedback/prompts/judge.txt``, or ``prompt_path``) and answers
A, B or tie; the gap reward is +1 when the improvement ``y`` wins, -1 when the reference wins, 0 for a tie. With
``both_orders`` every pair is asked twice with the responses swapped and the two verdicts averaged, which cancels
the position bias LLM judges are known for. Requests go through an ``OpenAITeacher`` (concurrency, retries,
cache, usage counters); an answer that is none of A / B / tie counts as a tie and as ``judge_off_format``; a request
the endpoint did not answer (refused, or dead after every retry below ``max_failed_fraction``: ``Dropped``) counts as
a tie and as ``judge_dropped`` (the client's ``dead_requests`` says how many were dead).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from feedback.base import Dropped, Judge
from feedback.llm import PACKAGED_PROMPTS
from feedback.openai import OpenAITeacher

_VERDICT = re.compile(r"^\W*(A|B|tie)\b", re.IGNORECASE)


class LLMJudge(Judge):
    """Pairwise LLM judgements as gap rewards in [-1, 1].

    Args:
        client: the endpoint (``feedback.openai.OpenAITeacher``: model, base_url, key variable, cache, retries).
        prompt_path: a judge template with ``{x}``, ``{a}``, ``{b}`` (default: the packaged ``judge.txt``).
        both_orders: ask each pair in both orders and average (cancels position bias; twice the calls).
        max_tokens: tokens the judge may write (the verdict is its first word).
    """

    def __init__(self, client: OpenAITeacher, prompt_path: str | None = None, both_orders: bool = True,
                 max_tokens: int = 4) -> None:
        self.client, self.both_orders, self.max_tokens = client, both_orders, max_tokens
        self.name = f"judge:{client.name}"
        path = Path(prompt_path).expanduser() if prompt_path else PACKAGED_PROMPTS / "judge.txt"
        self.template = path.read_text(encoding="utf-8")
        missing = [p for p in ("{x}", "{a}", "{b}") if p not in self.template]
        if missing:
            raise ValueError(f"{path}: judge prompt lacks the placeholder(s) {', '.join(missing)}")
        self.off_format = 0
        self.dropped = 0

    def _prompt(self, x: str, a: str, b: str) -> str:
        return self.template.replace("{x}", x.strip()).replace("{a}", a.strip()).replace("{b}", b.strip())

    def _verdict(self, answer: str | Dropped) -> str:
        if isinstance(answer, Dropped):
            self.dropped += 1
            return "tie"
        match = _VERDICT.match(answer)
        if match is None:
            self.off_format += 1
            return "tie"
        return match.group(1).lower() if match.group(1).lower() == "tie" else match.group(1).upper()

    def score(self, items: Sequence[tuple[str, str, str]]) -> list[float]:
        prompts = [self._prompt(x, y_ref, y) for x, y_ref, y in items]  # A = reference, B = improvement
        if self.both_orders:
            prompts += [self._prompt(x, y, y_ref) for x, y_ref, y in items]  # A = improvement
        verdicts = [self._verdict(a) for a in self.client.complete(prompts, 0.0, self.max_tokens)]
        first = [{"B": 1.0, "A": -1.0, "tie": 0.0}[v] for v in verdicts[: len(items)]]
        if not self.both_orders:
            return first
        second = [{"A": 1.0, "B": -1.0, "tie": 0.0}[v] for v in verdicts[len(items) :]]
        return [(f + s) / 2 for f, s in zip(first, second)]

    def usage(self) -> dict[str, float]:
        return self.client.usage() | {"judge_off_format": float(self.off_format), "judge_dropped": float(self.dropped)}

    def reset_usage(self) -> None:
        self.client.reset_usage()
        self.off_format = self.dropped = 0
