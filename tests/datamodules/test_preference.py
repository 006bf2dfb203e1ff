"""Preference data: HH-RLHF and TL;DR parsing from small files written here, bad rows, folds, the synthetic task."""

import json

import pytest

from datamodules.preference import PreferenceError, constrained_lists, hh_rlhf, three_folds, tldr
from tasks.constrained_lists import Spec, checks, noisy_response, score

H, A = "\n\nHuman:", "\n\nAssistant:"


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_hh_rlhf_splits_dialogues_at_the_last_assistant_turn(tmp_path):
    rows = [{"chosen": f"{H} Hi{A} Hello!{H} Capital of France?{A} Paris.",
             "rejected": f"{H} Hi{A} Hello!{H} Capital of France?{A} No idea."},
            {"chosen": f"{H} x{A} same", "rejected": f"{H} x{A} same"}]  # identical replies: no preference, skipped
    [pref] = hh_rlhf(str(write_jsonl(tmp_path / "hh.jsonl", rows)))
    assert pref.prompt == f"{H} Hi{A} Hello!{H} Capital of France?{A}"
    assert (pref.chosen, pref.rejected) == (" Paris.", " No idea.")
    episode = pref.episode("hh_rlhf")
    assert [(t.role, t.text) for t in episode.turns] == [("reference", " No idea."), ("response", " Paris.")]


@pytest.mark.parametrize(("row", "message"), [
    ('{"chosen": "no assistant here", "rejected": "nor here"}', r"hh.jsonl:2: a dialogue has no"),
    (json.dumps({"chosen": f"{H} a{A} b", "rejected": f"{H} other{A} c"}), r"hh.jsonl:2: 'chosen' and 'rejected' differ"),
    ('{"chosen": 3, "rejected": "x"}', r"hh.jsonl:2: field 'chosen' must be a string"),
    ('{"chosen": "a"', r"hh.jsonl:2: not valid JSON"),
])
def test_bad_hh_rows_are_reported_with_file_and_line(tmp_path, row, message):
    good = {"chosen": f"{H} q{A} good", "rejected": f"{H} q{A} bad"}
    path = write_jsonl(tmp_path / "hh.jsonl", [good, row])
    with pytest.raises(PreferenceError, match=message):
        hh_rlhf(str(path))


def test_tldr_comparisons_follow_the_human_choice(tmp_path):
    info = {"id": "t3", "post": "My cat ignores me.", "title": "Cat", "subreddit": "cats"}
    rows = [{"info": info, "summaries": [{"text": "cat ignores"}, {"text": "owner sad, cat aloof"}], "choice": 1},
            {"info": info, "summaries": [{"text": "a"}, {"text": "b"}], "choice": 0}]
    first, second = tldr(str(write_jsonl(tmp_path / "c.jsonl", rows)))
    assert first.prompt == "SUBREDDIT: r/cats\nTITLE: Cat\nPOST: My cat ignores me.\nTL;DR:"
    assert (first.chosen, first.rejected) == (" owner sad, cat aloof", " cat ignores")
    assert (second.chosen, second.rejected) == (" a", " b")
    bad = write_jsonl(tmp_path / "bad.jsonl", [rows[0], {"info": info, "summaries": [{"text": "a"}], "choice": 0}])
    with pytest.raises(PreferenceError, match=r"bad.jsonl:2: expected two 'summaries' and 'choice' 0 or 1"):
        tldr(str(bad))
    with pytest.raises(FileNotFoundError, match="preference file not found"):
        tldr(str(tmp_path / "missing.jsonl"))


def test_three_equal_seeded_folds():
    prefs = constrained_lists(30, seed=1)
    folds = three_folds(prefs, seed=0)
    assert [len(folds[f]) for f in ("sft", "rm", "rl")] == [10, 10, 10]
    assert len({p.id for f in folds.values() for p in f}) == 30
    assert three_folds(prefs, seed=0) == folds and three_folds(prefs, seed=1) != folds


def test_the_synthetic_score_counts_satisfied_constraints():
    spec = Spec(4, "odd", "increasing", 7)
    assert spec.prompt == "Write 4 odd numbers between 1 and 30 in increasing order, starting with 7."
    assert Spec.parse(spec.prompt) == spec
    assert score(spec.prompt, "7, 9, 11, 13") == 1.0
    assert checks(spec, "7, 9, 12") == {"format": True, "count": False, "parity": False, "order": True, "start": True}
    assert score(spec.prompt, "7, 9, 12") == 0.6
    assert score(spec.prompt, "9, 7, 11, 13") == 0.6  # order and start broken
    assert score(spec.prompt, "seven, nine") == 0.0 and score(spec.prompt, "7, 9, 31, 33") == 0.0  # format
    for p in constrained_lists(200, seed=3):  # every pair is a strict preference with its exact scores
        assert p.chosen_score == score(p.prompt, p.chosen) > p.rejected_score == score(p.prompt, p.rejected)


def test_the_noisy_writer_breaks_what_it_says():
    import random

    spec, rng = Spec(5, "even", "decreasing", 28), random.Random(0)
    assert noisy_response(spec, rng, 0) == "28, 26, 24, 22, 20"
    scores = [score(spec.prompt, noisy_response(spec, rng, k)) for k in range(6) for _ in range(20)]
    assert max(scores[20:40]) <= 0.8 and scores[100:] == [0.0] * 20  # one corruption costs a point; 5 breaks format
