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
    pairs = constrained_lists(200, seed=3)
    # the first four checked by hand, constraint by constraint (format, count, parity, order, start)
    assert [(p.prompt, p.chosen, p.chosen_score, p.rejected, p.rejected_score) for p in pairs[:4]] == [
        ("Write 4 odd numbers between 1 and 30 in decreasing order, starting with 27.",
         "25, 27, 23, 21", 0.6,  # 25 < 27 breaks order, starts with 25: 3/5
         "23 25 21 20 17 and more", 0.0),  # no list: format fails everything
        ("Write 5 odd numbers between 1 and 30 in decreasing order, starting with 29.",
         "29, 27, 25, 23, 21", 1.0,
         "29, 26, 27, 23, 21, 19", 0.4),  # six numbers, 26 even, 26 < 27: format and start only, 2/5
        ("Write 3 odd numbers between 1 and 30 in increasing order, starting with 5.",
         "5, 7", 0.8,  # two numbers: 4/5
         "9, 7, 11", 0.6),  # 9 > 7 breaks order, starts with 9: 3/5
        ("Write 3 odd numbers between 1 and 30 in decreasing order, starting with 5.",
         "5, 7, 3", 0.8,  # 5 < 7 breaks order: 4/5
         "5 7 and more", 0.0),
    ]
    for p in pairs:  # every pair is a strict preference, its scores recounted here independently of score()
        assert 5 * p.chosen_score == pytest.approx(satisfied(p.prompt, p.chosen)), p
        assert 5 * p.rejected_score == pytest.approx(satisfied(p.prompt, p.rejected)), p
        assert satisfied(p.prompt, p.chosen) > satisfied(p.prompt, p.rejected), p


def satisfied(prompt: str, response: str) -> int:
    """How many of the five constraints ``response`` meets, counted from the prompt's words (a second reading of
    the task, not tasks.constrained_lists)."""
    words = prompt.rstrip(".").split()  # Write N odd|even numbers between 1 and 30 in ORDER order, starting with S
    count, parity, order, start = int(words[1]), words[2], words[9], int(words[-1])
    items = response.strip().split(", ")
    if not all(item.isdigit() and 1 <= int(item) <= 30 for item in items):
        return 0  # not a list of numbers in range: nothing else counts
    numbers = [int(item) for item in items]
    strictly = len(set(numbers)) == len(numbers) and numbers == sorted(numbers, reverse=order == "decreasing")
    parity_ok = all(n % 2 == (parity == "odd") for n in numbers)
    return 1 + (len(numbers) == count) + parity_ok + strictly + (numbers[0] == start)


def test_the_noisy_writer_breaks_what_it_says():
    import random

    spec, rng = Spec(5, "even", "decreasing", 28), random.Random(0)
    assert noisy_response(spec, rng, 0) == "28, 26, 24, 22, 20"
    scores = [score(spec.prompt, noisy_response(spec, rng, k)) for k in range(6) for _ in range(20)]
    assert max(scores[20:40]) <= 0.8 and scores[100:] == [0.0] * 20  # one corruption costs a point; 5 breaks format
