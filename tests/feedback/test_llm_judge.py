"""The LLM judge for PIT against the local OpenAI-protocol server."""

import re

from feedback.llm_judge import LLMJudge
from feedback.openai import OpenAITeacher
from tests.openai_server import FakeOpenAI


def prefers_longer_lists(prompt: str) -> str:
    """A judge with a position bias on ties: the response with more numbers wins, equal ones say 'A'."""
    a = re.search(r"Response A:\n(.*)\n", prompt).group(1)
    b = re.search(r"Response B:\n(.*)\n", prompt).group(1)
    if "garbled" in a + b:
        return "I cannot tell."
    return " B" if len(b.split(",")) > len(a.split(",")) else " A"


def test_verdicts_become_gap_rewards_and_both_orders_cancel_position_bias(tmp_path):
    server = FakeOpenAI(prefers_longer_lists)
    try:
        client = OpenAITeacher(model="judge-llm", base_url=server.base_url, api_key_env=None,
                               cache_path=str(tmp_path / "cache.sqlite"))
        items = [("x1", "1, 2", "1, 2, 3"), ("x2", "1, 2, 3", "1"), ("x3", "4, 5", "6, 7"), ("x4", "1", "garbled")]
        judge = LLMJudge(client)
        assert judge.score(items) == [1.0, -1.0, 0.0, 0.0]  # x3: "A" in both orders = a tie after averaging
        assert len(server.records) == 8 and judge.usage()["judge_off_format"] == 2
        assert server.records[0].body["max_tokens"] == 4 and server.records[0].body["temperature"] == 0.0
        one_order = LLMJudge(client, both_orders=False)
        assert one_order.score(items[:3]) == [1.0, -1.0, -1.0]  # the bias shows with one order
        assert len(server.records) == 8  # ... and came from the cache
    finally:
        server.close()
