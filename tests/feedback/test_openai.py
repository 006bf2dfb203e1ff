"""The OpenAI-compatible teacher against a real HTTP server on 127.0.0.1 (tests/openai_server.py)."""

import json
import re
import time
from types import SimpleNamespace

import pytest

from datamodules.interaction_log import Episode
from feedback import openai as openai_teacher
from feedback.base import Dropped, Feedback, TeacherUnavailable
from feedback.cache import cache_key
from feedback.editing import edit_traces
from feedback.llm_judge import LLMJudge
from feedback.openai import OpenAITeacher, retry_after
from tasks.multistep_arithmetic import solve
from tests.openai_server import FakeOpenAI, max_overlap

KEY = "sk-test-SECRET-0123456789"
FEEDBACK_PROMPT = """Q: (1 + 2) =
Answer: Let's think step by step.
(1) This equation is (1 + 2) = 4.
(Final response) So the answer is 4.
Earliest error step: (1)
Error segment: "(1 + 2) = 4"
Error reason: 1 + 2 is 3. [END]

Q: {question}
Answer: Let's think step by step.{answer_info}
{attempt}
Earliest error step:
"""


def _question_of(prompt: str) -> str:
    return re.findall(r"^Q: (.*)$", prompt, flags=re.M)[-1].removesuffix(" =").strip()


def arithmetic_answer(prompt: str) -> str:
    """What a competent teacher says: the first wrong calculation as feedback, the gold steps as improvement."""
    gold = solve(_question_of(prompt)).splitlines()
    if prompt.endswith("Earliest error step:\n"):
        attempt = prompt.rsplit("Q: ", 1)[1].split("\n")[2:-2]  # between the answer header and "Earliest error step:"
        for line, good in zip(attempt, gold):
            if line != good:
                lhs, value = line.rsplit(" = ", 1)
                segment = f"{lhs.rsplit(' = ', 1)[-1]} = {value.rstrip('.')}"
                return f' ({line[1 : line.index(")")]})\nError segment: "{segment}"\nError reason: that is not the value. [END]'
        return " None [END]"
    partial = prompt.rsplit("Updated Answer:", 1)[1].count("\n(")  # steps kept before the wrong one
    return "\n" + "\n".join(gold[partial:]) + " [END]"


@pytest.fixture
def server():
    s = FakeOpenAI(arithmetic_answer)
    yield s
    s.close()


@pytest.fixture
def prompts_dir(tmp_path):
    folder = tmp_path / "prompts" / "multistep_arithmetic"
    folder.mkdir(parents=True)
    (folder / "feedback.txt").write_text(FEEDBACK_PROMPT)
    return tmp_path / "prompts"


def make_teacher(server, tmp_path, prompts_dir=None, **kwargs):
    options = dict(model="teacher-llm", base_url=server.base_url, api_key_env="TEST_TEACHER_KEY",
                   cache_path=str(tmp_path / "cache.sqlite"), backoff=0.01, timeout=5.0,
                   prompts_dir=str(prompts_dir) if prompts_dir else None)
    return OpenAITeacher(**options | kwargs)


def wrong_attempt(task, question):
    """The gold rationale with step (2)'s result and the final answer off by 3."""
    lines = task.gold_rationale(question).splitlines()
    for i in (1, -1):
        lines[i] = re.sub(r"(-?\d+)\.$", lambda m: f"{int(m.group(1)) + 3}.", lines[i])
    return "\n".join(lines)


def test_feedback_and_improvement_become_an_improved_episode(server, tmp_path, prompts_dir, ma_task):
    teacher = make_teacher(server, tmp_path, prompts_dir)
    question = ma_task.questions("train")[0]
    attempt = wrong_attempt(ma_task, question)
    [feedback] = teacher.feedback(ma_task, [(question, attempt)])
    step2 = attempt.splitlines()[1]
    wrong_value = step2.rsplit(" = ", 1)[1].rstrip(".")
    assert isinstance(feedback, Feedback) and feedback.step == "2"
    assert feedback.text.startswith('Step (1) is correct. In step (2) the part "')
    assert feedback.text.endswith(f'= {wrong_value}" is incorrect. This is because that is not the value.')

    [episode] = edit_traces(ma_task, teacher, [question], [([attempt], [None])], iteration=1,
                            prompts=[ma_task.prompt(question)])
    assert isinstance(episode, Episode) and episode.outcome == "improved", episode.reason
    assert [(t.role, t.by) for t in episode.turns] == [("attempt", "policy"), ("feedback", "teacher-llm"),
                                                       ("improvement", "teacher-llm"), ("feedback", "gold")]
    assert episode.turns[2].text == ma_task.gold_rationale(question)
    # the improvement prompt carried the verified step (1) and asked the LLM to continue from step (2)
    improve_request = [r for r in server.records if "Updated Answer" in r.body["prompt"]][-1]
    assert improve_request.body["prompt"].endswith(attempt.splitlines()[0] + "\n")
    assert improve_request.body["stop"] == ["[END]"] and improve_request.body["temperature"] == 0.7


def test_many_requests_overlap_and_concurrency_one_does_not(tmp_path, ma_task, prompts_dir):
    items = [(q, wrong_attempt(ma_task, q)) for q in ma_task.questions("train")[:16]]
    # the server holds every request until 16 have arrived: only a client with all 16 in flight gets answers at once
    server = FakeOpenAI(arithmetic_answer, gate=16)
    try:
        answers = make_teacher(server, tmp_path, prompts_dir, concurrency=16, cache_path=None).feedback(ma_task, items)
        assert all(isinstance(a, Feedback) for a in answers)
        assert len(server.records) == 16
        assert max_overlap(server.records) == 16
    finally:
        server.close()
    # one at a time: the first request waits 0.5 s for a second that never comes while it is open
    server = FakeOpenAI(arithmetic_answer, gate=2, gate_s=0.5)
    try:
        make_teacher(server, tmp_path, prompts_dir, concurrency=1, cache_path=None).feedback(ma_task, items[:4])
        assert len(server.records) == 4
        assert max_overlap(server.records) == 1
    finally:
        server.close()


def record_sleeps(monkeypatch) -> list[float]:
    """The teacher's waits, recorded instead of slept."""
    sleeps = []
    clock = SimpleNamespace(sleep=sleeps.append, perf_counter=time.perf_counter, time=time.time)
    monkeypatch.setattr(openai_teacher, "time", clock)
    return sleeps


def test_429_waits_what_retry_after_says(server, tmp_path, prompts_dir, ma_task, monkeypatch):
    server.faults = ["429:0.6"]
    sleeps = record_sleeps(monkeypatch)
    teacher = make_teacher(server, tmp_path, prompts_dir)
    question = ma_task.questions("train")[0]
    [feedback] = teacher.feedback(ma_task, [(question, wrong_attempt(ma_task, question))])
    assert isinstance(feedback, Feedback)
    assert sleeps == [0.6]  # the server's Retry-After, not the 0.01 s backoff
    assert len(server.records) == 2
    assert teacher.usage()["retries"] == 1 and teacher.usage()["calls"] == 2


def test_500s_and_a_hang_past_the_timeout_are_retried(server, tmp_path, prompts_dir, ma_task):
    server.faults, server.hang_s = ["500", "hang", "500"], 10.0  # the hang lasts until released (10 s at most)
    teacher = make_teacher(server, tmp_path, prompts_dir, timeout=1.0)
    question = ma_task.questions("train")[0]
    [feedback] = teacher.feedback(ma_task, [(question, wrong_attempt(ma_task, question))])
    assert isinstance(feedback, Feedback)
    assert [r.end == 0.0 for r in server.records] == [False, True, False, False]  # answered with the hang in flight
    server.release.set()
    usage = teacher.usage()
    assert (usage["calls"], usage["retries"], usage["answered"], usage.get("failures", 0)) == (4, 3, 1, 0)
    assert usage["prompt_tokens"] > 100 and usage["completion_tokens"] > 0 and usage["latency_mean_s"] > 0


def test_malformed_json_drops_the_item_after_the_retries(server, tmp_path, prompts_dir, ma_task):
    server.faults = ["malformed"] * 3
    teacher = make_teacher(server, tmp_path, prompts_dir, max_retries=2)
    question = ma_task.questions("train")[0]
    [answer] = teacher.feedback(ma_task, [(question, wrong_attempt(ma_task, question))])
    assert isinstance(answer, Dropped) and "malformed response" in answer.reason
    assert teacher.usage()["failures"] == 1 and len(server.records) == 3


def test_off_format_answers_are_dropped_and_counted(tmp_path, prompts_dir, ma_task):
    server = FakeOpenAI(lambda prompt: " I think it is all fine!")
    try:
        teacher = make_teacher(server, tmp_path, prompts_dir)
        questions = ma_task.questions("train")[:3]
        episodes = edit_traces(ma_task, teacher, questions, [([wrong_attempt(ma_task, q)], [None]) for q in questions],
                               iteration=1, prompts=[ma_task.prompt(q) for q in questions])
        assert [e.outcome for e in episodes] == ["dropped"] * 3
        assert episodes[0].reason.startswith("teacher feedback: off-format feedback")
        assert teacher.usage()["off_format"] == 3
    finally:
        server.close()


def test_a_dead_endpoint_fails_with_a_clear_message(tmp_path, prompts_dir, ma_task, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", KEY)
    dead = FakeOpenAI(arithmetic_answer)
    dead.close()  # the port is now closed: connection refused
    teacher = make_teacher(dead, tmp_path, prompts_dir, max_retries=2)
    question = ma_task.questions("train")[0]
    with pytest.raises(TeacherUnavailable, match=r"gave no answer after 3 tries .*--ckpt_path last") as error:
        teacher.feedback(ma_task, [(question, wrong_attempt(ma_task, question))])
    assert dead.base_url in str(error.value) and KEY not in str(error.value)


def echo(prompt: str) -> str:
    return f"answer to {prompt}"


def dead_for(*prompts: str):
    """The fault server's ``fault_of``: every try of these prompts gets a 500."""
    return lambda prompt: "500" if prompt in prompts else None


def test_a_few_dead_requests_are_counted_drops_and_the_round_goes_on(tmp_path, prompts_dir, ma_task, monkeypatch):
    record_sleeps(monkeypatch)
    prompts = [f"p{i}" for i in range(20)]
    server = FakeOpenAI(echo, fault_of=dead_for("p4", "p11"))  # 2 of 20: not more than max_failed_fraction=0.1
    try:
        teacher = make_teacher(server, tmp_path, max_retries=1, concurrency=4)
        answers = teacher.complete(prompts, 0.0, 8)
        assert [i for i, a in enumerate(answers) if isinstance(a, Dropped)] == [4, 11]
        assert all(a == f"answer to {p}" for p, a in zip(prompts, answers) if not isinstance(a, Dropped))
        assert answers[4] == Dropped("teacher unavailable after 2 tries: HTTP 500", unavailable=True)
        usage = teacher.usage()
        assert (usage["requests"], usage["dead_requests"], usage["answered"], usage["retries"]) == (20, 2, 18, 2)
        assert [r.body["prompt"] for r in server.records].count("p4") == 2 and len(server.records) == 22
        assert len(teacher.cache) == 18  # a dead answer is never cached: a rerun asks it again
        teacher.reset_usage()  # a new round starts counting from zero, dead_requests logged as 0
        assert (teacher.usage()["requests"], teacher.usage()["dead_requests"]) == (0, 0)

        # through the editing, the dead request is the episode's reason in the interaction log
        question = ma_task.questions("train")[0]
        teacher = make_teacher(server, tmp_path / "edit", prompts_dir, max_retries=1, max_failed_fraction=1.0)
        server.fault_of = lambda prompt: "500"
        [episode] = edit_traces(ma_task, teacher, [question], [([wrong_attempt(ma_task, question)], [None])],
                                iteration=1, prompts=[ma_task.prompt(question)])
        assert episode.outcome == "dropped"
        assert episode.reason == "teacher feedback: teacher unavailable after 2 tries: HTTP 500"
        # a dead improvement request drops the episode too (not "failed": the attempt was never judged)
        teacher = make_teacher(server, tmp_path / "improve", prompts_dir, max_retries=1, max_failed_fraction=1.0,
                               scripted_feedback=True)
        [episode] = edit_traces(ma_task, teacher, [question], [([wrong_attempt(ma_task, question)], [None])],
                                iteration=1, prompts=[ma_task.prompt(question)])
        assert (episode.outcome, episode.reason) == (
            "dropped", "teacher improvement: teacher unavailable after 2 tries: HTTP 500")
        assert [t.role for t in episode.turns] == ["attempt", "feedback"]
    finally:
        server.close()
    with pytest.raises(ValueError, match="max_failed_fraction"):
        make_teacher(server, tmp_path, max_failed_fraction=1.5)


def slow_after_p6(prompt: str) -> str:
    """``echo``, slowly for p7 and p8: whichever is in flight when p6 fails the round leaves the client ample time
    to cancel the requests not yet sent (no assertion is about time)."""
    if prompt in ("p7", "p8"):
        time.sleep(0.3)
    return echo(prompt)


def fail_a_round(server, tmp_path) -> tuple[OpenAITeacher, list[str], pytest.ExceptionInfo]:
    """Ten prompts asked one at a time, p3 and p6 dead: the second dead one is 2 of 10, past 0.1."""
    prompts = [f"p{i}" for i in range(10)]
    server.fault_of = dead_for("p3", "p6")
    teacher = make_teacher(server, tmp_path, max_retries=1, concurrency=1)
    with pytest.raises(TeacherUnavailable) as error:
        teacher.complete(prompts, 0.0, 8)
    return teacher, prompts, error


def test_dead_requests_past_the_fraction_fail_the_round_with_the_counts(tmp_path, monkeypatch):
    record_sleeps(monkeypatch)
    server = FakeOpenAI(slow_after_p6)
    try:
        teacher, prompts, error = fail_a_round(server, tmp_path)
    finally:
        server.close()
    message = str(error.value)
    assert message.startswith(f"teacher endpoint {server.base_url}/completions gave no answer after 2 tries")
    assert "(last: HTTP 500); 2 of 10 requests this round failed, more than max_failed_fraction=0.1" in message
    assert message.endswith("rerunning (a fit: with --ckpt_path last) pays for none of them again")
    asked = [r.body["prompt"] for r in server.records]
    answered = {p for p in asked if p not in ("p3", "p6")}
    assert {"p0", "p1", "p2", "p4", "p5"} <= answered and "p9" not in asked  # asked in order, the rest cancelled
    cached = {p for p in prompts if teacher.cache.get(cache_key(teacher.url, teacher._payload(p, 0.0, 8)))}
    assert cached == answered  # every answer received (in flight ones too) is cached, no dead one
    assert teacher.usage()["dead_requests"] == 2


def test_a_rerun_after_a_failed_round_pays_for_nothing_twice(tmp_path, monkeypatch):
    record_sleeps(monkeypatch)
    server = FakeOpenAI(slow_after_p6)
    try:
        _, prompts, _ = fail_a_round(server, tmp_path)
        paid = {r.body["prompt"] for r in server.records if r.body["prompt"] not in ("p3", "p6")}
        before = len(server.records)
        server.fault_of = None  # the endpoint is back
        teacher = make_teacher(server, tmp_path, max_retries=1, concurrency=1)
        answers = teacher.complete(prompts, 0.0, 8)
    finally:
        server.close()
    assert answers == [echo(p) for p in prompts]
    rerun = [r.body["prompt"] for r in server.records[before:]]
    assert sorted(rerun) == sorted(set(prompts) - paid)  # each unpaid request once, no paid one again
    usage = teacher.usage()
    assert (usage["requests"], usage["cache_hits"], usage["calls"], usage["dead_requests"]) == (
        10, len(paid), 10 - len(paid), 0)


def test_the_llm_judge_scores_a_dead_request_as_a_counted_tie(tmp_path, monkeypatch):
    record_sleeps(monkeypatch)
    server = FakeOpenAI(lambda prompt: " B", fault_of=lambda prompt: "503" if "dead" in prompt else None)
    try:
        client = make_teacher(server, tmp_path, max_retries=1, max_failed_fraction=0.5)
        judge = LLMJudge(client, both_orders=False)
        assert judge.score([("x", "y_ref", "y"), ("x dead", "y_ref", "y")]) == [1.0, 0.0]
        usage = judge.usage()
        assert (usage["judge_dropped"], usage["judge_off_format"], usage["dead_requests"]) == (1, 0, 1)
    finally:
        server.close()


def test_refused_credentials_name_the_variable_not_the_key(server, tmp_path, prompts_dir, ma_task, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", KEY)
    server.answer = lambda prompt: f"you sent {KEY}"  # even a server echoing the key does not leak it
    server.faults = ["401"]
    teacher = make_teacher(server, tmp_path, prompts_dir)
    question = ma_task.questions("train")[0]
    with pytest.raises(TeacherUnavailable, match=r"HTTP 401.*\$TEST_TEACHER_KEY") as error:
        teacher.feedback(ma_task, [(question, wrong_attempt(ma_task, question))])
    assert KEY not in str(error.value)
    assert server.records[0].headers["Authorization"] == f"Bearer {KEY}"


def test_the_cache_makes_a_repeated_run_issue_zero_requests(server, tmp_path, prompts_dir, ma_task, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", KEY)
    items = [(q, wrong_attempt(ma_task, q)) for q in ma_task.questions("train")[:6]]
    teacher = make_teacher(server, tmp_path, prompts_dir)
    first = teacher.feedback(ma_task, items + items[:2])  # repeats: asked once
    sent = len(server.records)  # a transient reset on a loaded machine is retried: it adds a request, counted
    assert sent == 6 + teacher.usage().get("retries", 0) and len({json.dumps(r.body) for r in server.records}) == 6
    again = make_teacher(server, tmp_path, prompts_dir)
    second = again.feedback(ma_task, items)
    assert len(server.records) == sent and second == first[:6] and again.usage()["cache_hits"] == 6
    # a different sampling parameter is a different request
    make_teacher(server, tmp_path, prompts_dir, feedback_temperature=0.5).feedback(ma_task, items[:1])
    assert len(server.records) > sent
    assert KEY.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def test_chat_api_sends_messages_to_chat_completions(server, tmp_path, prompts_dir, ma_task):
    teacher = make_teacher(server, tmp_path, prompts_dir, api="chat", system_prompt="Continue the text.")
    question = ma_task.questions("train")[0]
    [feedback] = teacher.feedback(ma_task, [(question, wrong_attempt(ma_task, question))])
    assert isinstance(feedback, Feedback)
    record = server.records[0]
    assert record.path == "/v1/chat/completions"
    assert [m["role"] for m in record.body["messages"]] == ["system", "user"]


def test_a_refused_request_drops_only_that_item(server, tmp_path, prompts_dir, ma_task):
    server.faults = ["400"]
    teacher = make_teacher(server, tmp_path, prompts_dir, concurrency=1)
    items = [(q, wrong_attempt(ma_task, q)) for q in ma_task.questions("train")[:2]]
    answers = teacher.feedback(ma_task, items)
    assert isinstance(answers[0], Dropped) and "HTTP 400" in answers[0].reason
    assert isinstance(answers[1], Feedback)


def test_retry_after_header_forms():
    assert retry_after("2.5") == 2.5
    assert retry_after(None) is None and retry_after("soon") is None
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after(http_date) <= 31
