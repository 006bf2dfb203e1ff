"""Date Understanding end to end with an LLM teacher: rationale collection, then a TriPosT fit through cli.py, both
against a real OpenAI-protocol server on 127.0.0.1 (tests/openai_server.py)."""

import json

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cli import main
from datamodules.interaction_log import list_shards, read_shard
from feedback.base import TeacherUnavailable
from feedback.collect_rationales import collect
from feedback.openai import OpenAITeacher
from tasks.multiple_choice import DateUnderstanding
from tests.openai_server import FakeOpenAI
from tests.tasks.test_multiple_choice import write_du

REPO_CONFIG = "configs/tripost/date_understanding_llm.yaml"
KEY = "sk-du-test-KEY-9f8e7d6c"


def du_teacher_answers(task: DateUnderstanding):
    """A competent scripted LLM: right rationales (3 steps for every 4th question), feedback on step (1),
    improvements that end in the gold option."""
    gold = {q.question.split("\n")[0]: (i, q.answer, task.option_text(q, q.answer)) for i, q in enumerate(task.pool())}

    def answer(prompt: str) -> str:
        last = prompt.rsplit("Q: ", 1)[1]
        index, letter, date = gold[last.split("\n")[0]]
        if prompt.endswith("Earliest error step:\n"):
            step1 = next((line for line in last.split("\n") if line.startswith("(1) ") and len(line) > 5), None)
            return f' (1)\nError segment: "{step1[4:]}"\nError reason: the date is wrong. [END]' if step1 else " ?"
        if "Updated Answer:" in last:
            k = last.rsplit("Updated Answer:", 1)[1].count("\n(") + 1
            return f"\n({k}) So tomorrow is {date}.\n(Final response) So the answer is {letter}. [END]"
        extra = "(2) It is a day in January.\n" if index % 4 == 0 else ""
        n = 3 if extra else 2
        return f"\n(1) Today is given in the question.\n{extra}({n}) So tomorrow is {date}.\n(Final response) So the answer is {letter}. [END]"

    return answer


def tiny_du_config(tmp_path, server, cache, data, shard, run, max_retries=6, max_epochs=3,
                   max_failed_fraction=0.1) -> str:
    """The shipped DU config pointed at the test server and shrunk to seconds; returns the YAML's path."""
    config = yaml.safe_load(open(REPO_CONFIG))
    rollouts = config["trainer"]["callbacks"][-1]["init_args"]
    rollouts["teacher"]["init_args"] |= {"model": "du-teacher", "base_url": server.base_url, "backoff": 0.01,
                                         "api_key_env": "DU_TEACHER_KEY", "cache_path": str(cache),
                                         "max_retries": max_retries, "max_failed_fraction": max_failed_fraction}
    task_args = config["data"]["init_args"]["task"]["init_args"]
    task_args |= {"data_path": str(data), "rationales": str(shard), "num_test_seen": 2}
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(run)
    config["trainer"] |= {"max_epochs": max_epochs, "enable_progress_bar": False, "enable_model_summary": False}
    config["model"]["init_args"] |= {"warmup_epochs": 1, "epochs_per_iteration": 1, "max_new_tokens": 40,
                                     "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                              "intermediate_size": 64}}
    config["data"]["init_args"] |= {"vocab_size": 400, "batch_size": 4, "min_examples": 0}  # 10 rollouts of a tiny model
    path = tmp_path / f"du-{len(list(tmp_path.glob('du-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_date_understanding_collects_rationales_and_fits_against_the_server(tmp_path, monkeypatch):
    monkeypatch.setenv("DU_TEACHER_KEY", KEY)
    data = write_du(tmp_path / "du.json", n=16)
    task = DateUnderstanding(data_path=str(data))
    server = FakeOpenAI(du_teacher_answers(task))
    cache = tmp_path / "cache.sqlite"
    try:
        teacher = OpenAITeacher(model="du-teacher", base_url=server.base_url, api_key_env="DU_TEACHER_KEY",
                                cache_path=str(cache))
        shard = collect(task, teacher, str(tmp_path / "rationales.jsonl"))
        assert [e.outcome for e in read_shard(shard)] == ["correct"] * 16 and len(server.records) == 16

        run = tmp_path / "run"
        main(["fit", "--config", tiny_du_config(tmp_path, server, cache, data, shard, run)])
    finally:
        server.close()

    shards = list_shards(run / "interaction_logs")
    assert sorted(shards) == [1, 2]
    episodes = read_shard(shards[1])
    assert len(episodes) == 10  # 16 questions: 4 with 3-step rationales (unseen test), 2 seen test, 10 train
    assert len(episodes) == len(DateUnderstanding(data_path=str(data), rationales=str(shard),
                                                  num_test_seen=2).questions("train"))
    # the tiny policy's wrong attempts went to the teacher for feedback; one this small writes no numbered steps
    # yet, so the teacher's feedback cannot quote one and the episode is dropped with that reason (never a crash)
    rollout_requests = len(server.records) - 16
    wrong = [e for e in episodes if e.outcome != "correct"]
    assert rollout_requests > 0 and wrong
    assert all(e.reason.startswith("teacher feedback: off-format") for e in wrong if e.outcome == "dropped")
    events = EventAccumulator(str(run)).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"teacher/calls", "teacher/cache_hits", "teacher/prompt_tokens", "teacher/latency_mean_s"} <= scalars
    assert sum(s.value for s in events.Scalars("teacher/calls")) == rollout_requests
    off_format = sum(s.value for s in events.Scalars("teacher/off_format"))
    assert off_format == sum(e.reason is not None and "off-format" in e.reason for ep in [episodes, read_shard(shards[2])]
                             for e in ep)
    # the key went to the server in a header and nowhere else: not in configs, checkpoints, logs, shards, cache
    assert server.records[0].headers["Authorization"] == f"Bearer {KEY}"
    for file in [*run.rglob("*"), cache, shard]:
        if file.is_file():
            assert KEY.encode() not in file.read_bytes(), file
    saved = json.dumps(yaml.safe_load((run / "config.yaml").read_text()))
    assert "DU_TEACHER_KEY" in saved and KEY not in saved


@pytest.mark.slow
def test_a_dead_teacher_fails_the_round_and_the_resumed_run_pays_for_nothing_twice(tmp_path):
    data = write_du(tmp_path / "du.json", n=16)
    task = DateUnderstanding(data_path=str(data))
    answers, answered, up, doomed = du_teacher_answers(task), [], {"fully": True, "resumed": False}, {}

    def flaky(prompt: str) -> str:
        if len(answered) >= 3 and not up["fully"]:
            raise ConnectionResetError("teacher died")  # the handler drops the connection: a reset
        if up["resumed"] and prompt not in answered[:3] and doomed.setdefault("prompt", prompt) == prompt:
            raise ConnectionResetError("this one never gets through")  # one dead request in the resumed round
        answered.append(prompt)
        return answers(prompt)

    cache = tmp_path / "cache.sqlite"
    server = FakeOpenAI(flaky)  # one endpoint (the cache is keyed by it): dies after three answers, then recovers
    try:
        shard = collect(task, OpenAITeacher(model="du-teacher", base_url=server.base_url, api_key_env=None,
                                            cache_path=str(tmp_path / "other.sqlite")), str(tmp_path / "r.jsonl"))
        answered.clear()
        up["fully"] = False
        run = tmp_path / "run"
        with pytest.raises(TeacherUnavailable, match=r"iteration 1 rollouts failed: .*--ckpt_path last"):
            main(["fit", "--config", tiny_du_config(tmp_path, server, cache, data, shard, run, max_retries=1)])
        assert not list_shards(run / "interaction_logs") and len(answered) == 3  # nothing half-written
        up["fully"], up["resumed"] = True, True
        before = len(server.records)
        # one request of the resumed round stays dead: below max_failed_fraction, the round completes without it
        main(["fit", "--config", tiny_du_config(tmp_path, server, cache, data, shard, run, max_epochs=2,
                                                max_failed_fraction=0.5), "--ckpt_path", "last"])
        resumed = [r.body["prompt"] for r in server.records[before:]]
    finally:
        server.close()
    events = EventAccumulator(str(run)).Reload()
    # the same rollouts (seeded) asked the same questions: the 3 answered before the failure came from the cache
    assert events.Scalars("teacher/cache_hits")[-1].value == 3
    assert events.Scalars("teacher/calls")[-1].value == len(resumed) and not set(answered[:3]) & set(resumed)
    shards = list_shards(run / "interaction_logs")
    assert sorted(shards) == [1]
    assert resumed.count(doomed["prompt"]) == 7  # every try of the dead request (max_retries=6), none answered
    assert events.Scalars("teacher/dead_requests")[-1].value == 1
    assert events.Scalars("teacher/requests")[-1].value == len(set(resumed)) + 3
    dead = [e for e in read_shard(shards[1]) if e.reason and "teacher unavailable" in e.reason]
    assert [(e.outcome, e.reason.split(":")[:2]) for e in dead] == [
        ("dropped", ["teacher feedback", " teacher unavailable after 7 tries"])]


def test_rationale_collection_writes_nothing_while_requests_are_dead_and_a_rerun_completes_it(tmp_path):
    task = DateUnderstanding(data_path=str(write_du(tmp_path / "du.json", n=8)))
    pool = task.pool()
    dead = pool[2].question.split("\n")[0]  # every try of this question's rationale request gets a 500
    server = FakeOpenAI(du_teacher_answers(task), fault_of=lambda prompt: "500" if dead in prompt.rsplit("Q: ", 1)[1] else None)
    out, cache = tmp_path / "rationales.jsonl", str(tmp_path / "cache.sqlite")
    try:
        teacher = OpenAITeacher(model="du-teacher", base_url=server.base_url, api_key_env=None, cache_path=cache,
                                max_retries=0, max_failed_fraction=0.5)  # 1 dead of 8: the round itself goes on
        with pytest.raises(TeacherUnavailable, match=rf"1 of {len(pool)} rationale requests got no answer .*teacher "
                                                     r"unavailable after 1 tries: HTTP 500.*nothing was written"):
            collect(task, teacher, str(out))
        assert not out.exists()  # a shard is never rewritten: none with a hole in it
        asked = len(server.records)
        server.fault_of = None  # the endpoint is back: only the dead request is asked again
        shard = collect(task, OpenAITeacher(model="du-teacher", base_url=server.base_url, api_key_env=None,
                                            cache_path=cache), str(out))
    finally:
        server.close()
    assert [e.outcome for e in read_shard(shard)] == ["correct"] * len(pool)
    assert len(server.records) == asked + 1
