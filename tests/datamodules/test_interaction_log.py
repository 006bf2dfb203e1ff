import json

import pytest

from datamodules.interaction_log import Episode, LogError, Turn, list_shards, read_shard, shard_path, write_shard


def episode(**overrides) -> Episode:
    fields = dict(
        id="q1/it1",
        task="multistep_arithmetic",
        iteration=1,
        prompt="Q: (1 + 2) =\nAnswer: Let's think step by step.\n",
        turns=(
            Turn("attempt", "(1) 1 + 2 = 4.\n(Final response) So the answer is 4.", "policy"),
            Turn("feedback", 'In step (1) the part "1 + 2 = 4" is incorrect. This is because 1 + 2 is 3.', "script"),
            Turn("improvement", "(1) 1 + 2 = 3.\n(Final response) So the answer is 3.", "script"),
            Turn("feedback", "Step (1) to step (1) are correct. The final response is also correct.", "gold"),
        ),
        outcome="improved",
        gold="3",
    )
    return Episode(**{**fields, **overrides})


def test_round_trip_and_listing(tmp_path):
    episodes = [episode(), episode(id="q2/it1", outcome="dropped", reason="empty attempt", turns=(Turn("attempt", "x", "policy"),))]
    path = write_shard(shard_path(tmp_path, 1), episodes)
    assert path.name == "iter_001.jsonl"
    assert read_shard(path) == episodes
    (tmp_path / ".iter_002.jsonl.abc.tmp").write_text("partial")  # an interrupted write is not a shard
    assert list_shards(tmp_path) == {1: path}
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == [".iter_002.jsonl.abc.tmp"]


def test_shards_are_never_rewritten(tmp_path):
    path = write_shard(shard_path(tmp_path, 1), [episode()])
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="never rewritten"):
        write_shard(path, [episode(id="other")])
    assert path.read_bytes() == before


def test_invalid_episodes_are_not_written(tmp_path):
    with pytest.raises(LogError, match="episode 1 .* is invalid, nothing written: episode has no turns"):
        write_shard(shard_path(tmp_path, 1), [episode(), episode(id="empty", outcome="dropped", turns=())])
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path):
    def broken():
        yield episode()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_shard(shard_path(tmp_path, 3), broken())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: "{not json", "not valid JSON"),
        (lambda r: json.dumps([1, 2]), "expected a JSON object"),
        (lambda r: json.dumps({**r, "schema": 7}), "unsupported schema version 7"),
        (lambda r: json.dumps({k: v for k, v in r.items() if k != "prompt"}), "missing required field 'prompt'"),
        (lambda r: json.dumps({**r, "iteration": "1"}), "field 'iteration' must be int"),
        (lambda r: json.dumps({**r, "outcome": "great"}), "outcome 'great' is not one of"),
        (lambda r: json.dumps({**r, "colour": "red"}), "unknown field(s) ['colour']"),
        (lambda r: json.dumps({**r, "turns": [{**r["turns"][0], "role": "critique"}]}), "role 'critique' is not one of"),
        (lambda r: json.dumps({**r, "turns": r["turns"][:3]}), "must end with a feedback turn"),
        (lambda r: json.dumps({**r, "turns": [r["turns"][1], r["turns"][0]]}), "first turn must be an 'attempt'"),
        (lambda r: json.dumps({**r, "turns": [{**r["turns"][0], "tokens": [5, "a"]}, *r["turns"][1:]]}),
         "turn 0: 'tokens' must be a list of token ids"),
        (lambda r: json.dumps({**r, "turns": [{**r["turns"][0], "ids": [5]}, *r["turns"][1:]]}),
         "turn 0 must be an object with the keys 'role', 'text', 'by' (and optionally 'tokens')"),
    ],
)
def test_corrupt_lines_name_file_and_line(tmp_path, mutate, message):
    good = episode().to_json()
    path = tmp_path / "iter_001.jsonl"
    path.write_text(good + "\n" + mutate(json.loads(good)) + "\n")
    with pytest.raises(LogError) as error:
        read_shard(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)
