"""Word sorting: TriPosT's rationale format, Python's sort order, data loading, scripted feedback, improvements."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from feedback.base import Dropped, Feedback
from tasks import Question, WordSorting
from tasks.base import REPO_ROOT, split_steps
from tasks.word_sorting import DEFAULT_DATA_PATH
from tasks.word_sorting_rationale import ordinal, parse_step, solve

SIOUX = ["sioux", "fortescue", "purloin", "percept", "helmsman"]
# verbatim from TriPosT's data/raw/word_sorting_scripted_rationales.jsonl (record 4)
SIOUX_RATIONALE = """\
(1) The first letter: "sioux"="s" (19), "fortescue"="f" (6), "purloin"="p" (16), "percept"="p" (16), "helmsman"="h" (8).
(2) We now have: (6) "fortescue" < (8) "helmsman" < (16) ["purloin" ? "percept"] < (19) "sioux".
(3) Now sort this subpart ["purloin" ? "percept"] by looking at their second letters: "purloin"="u" (21), "percept"="e" (5).
(3.1) We now have: (5) "percept" < (21) "purloin".
(3.2) Hence, we have "percept" < "purloin".
(4) Hence, we have "fortescue" < "helmsman" < "percept" < "purloin" < "sioux".
(Final response) So the answer is: fortescue helmsman percept purloin sioux."""
# TriPosT's solve_subpart docstring example (without its stray "again")
PURLOIN_RATIONALE = """\
(1) The first letter: "purloin"="p" (16), "percept"="p" (16), "purcell"="p" (16).
(2) We now have: (16) ["purloin" ? "percept" ? "purcell"].
(3) Now sort this subpart ["purloin" ? "percept" ? "purcell"] by looking at their second letters: "purloin"="u" (21), "percept"="e" (5), "purcell"="u" (21).
(3.1) We now have: (5) "percept" < (21) ["purloin" ? "purcell"].
(3.2) Now sort this subpart ["purloin" ? "purcell"] by looking at their third letters: "purloin"="r" (18), "purcell"="r" (18).
(3.2.1) We now have: (18) ["purloin" ? "purcell"].
(3.2.2) Now sort this subpart ["purloin" ? "purcell"] by looking at their fourth letters: "purloin"="l" (12), "purcell"="c" (3).
(3.2.3) We now have: (3) "purcell" < (12) "purloin".
(3.2.4) Hence, we have "purcell" < "purloin".
(3.3) Hence, we have "percept" < "purcell" < "purloin".
(4) Hence, we have "percept" < "purcell" < "purloin".
(Final response) So the answer is: percept purcell purloin."""

def question(words: list[str]) -> Question:
    return Question("q", "Sort the following words alphabetically:\nList: " + " ".join(words), " ".join(sorted(words)),
                    "4-7", True)


def replace_step(rationale: str, label: str, new_line: str) -> str:
    return "\n".join(new_line if line.startswith(f"({label}) ") else line for line in rationale.splitlines())


def write_data(path: Path, examples: object) -> Path:
    path.write_text(json.dumps({"examples": examples}))
    return path


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> WordSorting:
    """A small task on a hand-made file (the real BIG-bench file is tested separately)."""
    rng = random.Random(0)
    examples = []
    for n in [2, 3, 4, 5, 6, 7] * 4 + [8, 9, 12, 16, 20] * 2:
        words: dict[str, None] = {}
        while len(words) < n:  # distinct words, many sharing prefixes
            words["".join(rng.choice("abcdef") for _ in range(rng.randint(1, 5)))] = None
        examples.append({"input": " ".join(words), "target": " ".join(sorted(words))})
    path = write_data(tmp_path_factory.mktemp("ws") / "word_sorting.json", examples)
    return WordSorting(str(path), num_train=16, num_test_seen=8, num_test_unseen=10, seed=1)


@pytest.fixture(scope="module")
def sorter(tmp_path_factory: pytest.TempPathFactory) -> WordSorting:
    """A task whose questions do not matter: rationales, parsing and feedback depend only on the words."""
    path = write_data(tmp_path_factory.mktemp("ws1") / "one.json", [{"input": "b a", "target": "a b"}])
    return WordSorting(str(path), num_train=1, num_test_seen=0, num_test_unseen=0)


# ------------------------------------------------------------------------------------------------ rationales


def test_reference_rationales_match_tripost() -> None:
    assert solve(SIOUX) == SIOUX_RATIONALE
    assert solve(["purloin", "percept", "purcell"]) == PURLOIN_RATIONALE
    assert solve(["syndrome", "therefrom"]).splitlines()[-1] == "(Final response) So the answer is: syndrome therefrom."


def test_sibling_subparts_get_distinct_labels() -> None:
    # TriPosT labelled both of these (6.2); they must be (3.2) and (3.3), then (3.4) Hence
    labels = [label for label, _ in split_steps(solve(["scrumptious", "sidereal", "siena", "scottish", "saxon"]))]
    assert labels == ["1", "2", "3", "3.1", "3.2", "3.2.1", "3.2.2", "3.3", "3.3.1", "3.3.2", "3.4", "4",
                      "Final response"]


@pytest.mark.parametrize("words", [
    ["alumnus", "alum", "al", "a", "alumni"],  # prefixes come first
    ["apple", "ant", "apple", "apply", "apple"],  # duplicates
    ["o'neill", "oat", "o", "onus", "o's", "o.k.", "it&t", "it", "Zebra", "éclair", "42nd"],  # non a-z characters
])
def test_edge_cases_follow_pythons_sorted_order(sorter: WordSorting, words: list[str]) -> None:
    rationale = solve(words)
    assert rationale.splitlines()[-1] == f"(Final response) So the answer is: {' '.join(sorted(words))}."
    assert all(parse_step(label, line).kind != "invalid" for label, line in split_steps(rationale))
    assert sorter.verify(question(words), rationale).correct and sorter.is_correct(question(words), rationale)


def test_notation_for_missing_letters_duplicates_and_symbols() -> None:
    assert '"alumnus"="n" (14), "alum"="" (-97)' in solve(["alumnus", "alum"])
    duplicates = solve(["apple", "apple", "ant"])
    assert '(2) We now have: (1) ["apple" ? "apple" ? "ant"].' in duplicates
    assert '(3.1) We now have: (14) "ant" < (16) "apple" = "apple".' in duplicates
    assert '"o\'s"="\'" (-57)' in solve(["o's", "oat"])


def test_random_lists_always_give_the_target_order(sorter: WordSorting) -> None:
    rng = random.Random(7)
    alphabet = "aab'&.Zé"
    for _ in range(300):
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 7))]
        rationale = solve(words)
        labels = [label for label, _ in split_steps(rationale)]
        assert len(labels) == len(set(labels)) == len(rationale.splitlines())
        assert sorter.extract_answer(rationale) == " ".join(sorted(words))
        assert sorter.verify(question(words), rationale).correct


def test_ordinals() -> None:
    assert [ordinal(i) for i in (0, 1, 2, 11, 19, 20, 21, 29, 39)] == [
        "first", "second", "third", "twelfth", "twentieth", "twenty-first", "twenty-second", "thirtieth", "fortieth"]


# ------------------------------------------------------------------------------------------------ data


def test_bigbench_splits() -> None:
    task = WordSorting()
    train, test = task.questions("train"), task.questions("test")
    assert (len(train), sum(q.seen for q in test), sum(not q.seen for q in test)) == (473, 127, 252)
    assert {q.bucket for q in train} == {"2-3", "4-7"} and all(q.seen for q in train)
    assert {q.bucket for q in test} == set(task.buckets()) == {"2-3", "4-7", "8-10", "11-15", "16+"}
    assert all(q.seen == (len(q.question.split("List: ")[1].split()) <= 7) for q in test)
    assert not {q.id for q in train} & {q.id for q in test}
    assert WordSorting().questions("train") == train
    assert WordSorting(seed=1).questions("train") != train
    assert all(task.gold_rationale(q).endswith(f"So the answer is: {q.answer}.") for q in train + test)
    q = train[0]
    assert task.prompt(q) == f"Q: {q.question}\nAnswer: Let's think step by step.\n"
    assert q.question.startswith("Sort the following words alphabetically:\nList: ")


def test_data_path_can_be_relative_or_absolute() -> None:
    absolute = WordSorting(str(REPO_ROOT / DEFAULT_DATA_PATH))
    assert absolute.questions("test") == WordSorting(DEFAULT_DATA_PATH).questions("test")


def test_a_hub_copy_in_bigbench_layout_loads_through_datasets(fake_hub) -> None:
    splits = {"train": [{"inputs": "Sort the following words alphabetically: List: pear apple\nSorted:",
                         "targets": ["apple pear"]},
                        {"inputs": "Sort the following words alphabetically: List: h g f e d c b a",
                         "targets": ["a b c d e f g h"]}],
              "validation": [{"inputs": "Q: Sort the following words alphabetically: List: fig date cherry\nA:",
                              "targets": ["cherry date fig"]}]}
    calls = fake_hub(splits)
    task = WordSorting("hf:tasksource/bigbench/word_sorting", num_train=1, num_test_seen=1, num_test_unseen=1)
    assert calls == [("tasksource/bigbench", "word_sorting", "train"),
                     ("tasksource/bigbench", "word_sorting", "validation")]
    questions = task.questions("train") + task.questions("test")
    assert sorted((q.id, q.answer, q.seen) for q in questions) == [
        ("ws-0000", "apple pear", True), ("ws-0001", "a b c d e f g h", False), ("ws-0002", "cherry date fig", True)]
    splits["validation"][0]["targets"] = ["fig date cherry"]
    with pytest.raises(ValueError, match=r"word_sorting\[validation\]:row 0: the target is not the input words"):
        WordSorting("hf:tasksource/bigbench/word_sorting", num_train=1, num_test_seen=1, num_test_unseen=1)


def test_an_unreachable_hub_copy_names_the_flag_and_the_offline_default(monkeypatch) -> None:
    import datasets

    def offline(name, config, split):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match=r"cannot load hf:someone/bb/ws \(split train\) given by "
                                                r"--data\.init_args\.task\.init_args\.data_path: offline.*tasks/data/bigbench"):
        WordSorting("hf:someone/bb/ws")


def test_missing_file_names_the_path_and_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothere\.json.*task\.init_args\.data_path"):
        WordSorting(str(tmp_path / "nothere.json"))


@pytest.mark.parametrize(("content", "where"), [
    ("{not json", "not valid JSON"),
    (json.dumps([1, 2]), "expected an object"),
    (json.dumps({"examples": [{"input": "b a", "target": "a b"}, {"input": "b a"}]}), r"\.json:1: expected"),
    (json.dumps({"examples": [{"input": "b a", "target": "b a"}]}), r"\.json:0: the target is not"),
    (json.dumps({"examples": [{"input": "", "target": ""}]}), r"\.json:0: expected a non-empty"),
])
def test_malformed_files_raise_value_errors(tmp_path: Path, content: str, where: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=where):
        WordSorting(str(path))


def test_split_sizes_must_fit(tmp_path: Path) -> None:
    path = write_data(tmp_path / "small.json", [{"input": "b a", "target": "a b"}])
    with pytest.raises(ValueError, match="1 seen and 0 unseen"):
        WordSorting(str(path), num_train=1, num_test_seen=1, num_test_unseen=0)


def test_small_task_is_deterministic_and_disjoint(task: WordSorting) -> None:
    train, test = task.questions("train"), task.questions("test")
    assert (len(train), len(test)) == (16, 18)
    assert not {q.id for q in train} & {q.id for q in test}
    assert [q.seen for q in test].count(False) == 10
    with pytest.raises(ValueError, match="unknown split"):
        task.questions("dev")


# ------------------------------------------------------------------------------------------------ answers


def test_extract_answer_and_is_correct(sorter: WordSorting) -> None:
    task, q = sorter, question(SIOUX)
    assert task.extract_answer(SIOUX_RATIONALE) == "fortescue helmsman percept purloin sioux"
    assert task.extract_answer("(Final response) So the answer is:  b   a .") == "b a"
    assert task.extract_answer("(Final response) So the answer is: etc. b.") == "etc. b"
    assert task.extract_answer("(3) Hence, we have ...") is None
    unfinished = replace_step(SIOUX_RATIONALE, "4",
                              '(4) Hence, we have "fortescue" < "helmsman" < ["percept" ? "purloin"] < "sioux".')
    assert task.extract_answer(unfinished) == q.answer and not task.is_correct(q, unfinished)


# ------------------------------------------------------------------------------------------------ feedback

STEP_1, STEP_3 = SIOUX_RATIONALE.splitlines()[0], SIOUX_RATIONALE.splitlines()[2]
SIOUX_FEEDBACK = [
    ("1", STEP_1.replace('"sioux"="s" (19)', '"sioux"="s" (18)'), '"sioux"="s" (18)',
     'the alphabetical order for the character "s" should be 19'),
    ("1", STEP_1.replace('"sioux"', '"sioax"'), '"sioax"="s" (19)',
     '"sioax" is not in the list of words provided by the question statement: sioux fortescue purloin percept helmsman'),
    ("1", '(1) The first letter: "sioux"="s" (19), "fortescue"="f" (6), "purloin"="p" (16), "helmsman"="h" (8).',
     '"sioux"="s" (19), "fortescue"="f" (6), "purloin"="p" (16), "helmsman"="h" (8)',
     'you missed the words "percept", which are in the list of words provided by the question statement'),
    ("2", '(2) We now have: (6) "fortescue" < (8) "helmsman" < (19) "sioux" < (16) ["purloin" ? "percept"].',
     '(16) ["purloin" ? "percept"]',
     "words are not sorted in ascending order, so words with (16) should come before words with (19)"),
    ("2", '(2) We now have: (6) "fortescue" < (8) "helmsman" < (16) "purloin" < (16) "percept" < (19) "sioux".',
     '(16) "percept"', "words with the number (16) should be grouped together"),
    ("3", STEP_3.replace("second", "third").replace('"u" (21)', '"r" (18)').replace('"e" (5)', '"r" (18)'),
     "by looking at their third letters", 'the second letter of ["purloin" ? "percept"] has not been sorted yet'),
    ("3", STEP_3.replace('"e" (5)', '"r" (18)'), '"percept"="r" (18)', 'the second letter of "percept" should be "e"'),
    ("3", '(3) Hence, we have "fortescue" < "helmsman" < ["purloin" ? "percept"] < "sioux".',
     '"fortescue" < "helmsman" < ["purloin" ? "percept"] < "sioux"',
     'the subpart ["purloin" ? "percept"] has not been sorted by its second letters yet'),
    ("4", '(4) Hence, we have "fortescue" < "helmsman" < "purloin" < "percept" < "sioux".', '"purloin" < "percept"',
     'according to step (3.1), "percept" comes before "purloin"'),
    ("4", '(4) Hence, we have "fortescue" < "percept" < "purloin" < "sioux".',
     '"fortescue" < "percept" < "purloin" < "sioux"', 'you missed the words "helmsman", which are in the list of words'),
    ("Final response", "(Final response) So the answer is: fortescue helmsman purloin percept sioux.",
     "the answer is: fortescue helmsman purloin percept sioux.",
     "this answer is inconsistent with the result in step (4)"),
]


@pytest.mark.parametrize(("label", "line", "segment", "reason"), SIOUX_FEEDBACK)
def test_feedback_names_the_step_segment_and_reason(
    sorter: WordSorting, label: str, line: str, segment: str, reason: str
) -> None:
    task, q = sorter, question(SIOUX)
    attempt = replace_step(SIOUX_RATIONALE, label, line)
    if label == "3" and "Hence" in line:  # a premature conclusion ends the attempt there
        attempt = "\n".join([*SIOUX_RATIONALE.splitlines()[:2], line])
    feedback = task.verify(q, attempt)
    assert (feedback.correct, feedback.step, feedback.segment) == (False, label, segment)
    assert feedback.text.endswith(f"This is because {reason}.")
    assert segment in line and Feedback.parse(feedback.text) == feedback


def test_feedback_matches_the_reference_example(sorter: WordSorting) -> None:
    task, words = sorter, ["coterie", "conic"]
    gold = solve(words)
    attempt = gold.replace('(3.2) Now sort this subpart ["coterie" ? "conic"] by looking at their third letters: '
                           '"coterie"="t" (20)', '(3.2) Now sort this subpart ["coterie" ? "conic"] by looking at '
                           'their third letters: "coterie"="c" (3)')
    assert attempt != gold
    assert task.verify(question(words), attempt).text == (
        'Step (1) to step (3.1) are correct. In step (3.2) the part ""coterie"="c" (3)" is incorrect. '
        'This is because the third letter of "coterie" should be "t".'
    )


def test_correct_and_unjudgeable_attempts(sorter: WordSorting) -> None:
    task, q = sorter, question(SIOUX)
    correct = "Step (1) to step (4) are correct. The final response is also correct."
    assert task.verify(q, SIOUX_RATIONALE).text == correct
    reordered = SIOUX_RATIONALE.replace('["purloin" ? "percept"]', '["percept" ? "purloin"]')  # same groups
    assert task.verify(q, reordered).correct
    with pytest.raises(ValueError, match="Final response"):
        task.verify(q, "\n".join(SIOUX_RATIONALE.splitlines()[:3]))


# ------------------------------------------------------------------------------------------------ improvement


@pytest.mark.parametrize(("label", "line", "segment", "reason"), SIOUX_FEEDBACK)
def test_improvement_keeps_the_prefix_and_fixes_the_rest(
    sorter: WordSorting, label: str, line: str, segment: str, reason: str
) -> None:
    task, q = sorter, question(SIOUX)
    attempt = replace_step(SIOUX_RATIONALE, label, line)
    feedback = task.verify(q, attempt)
    improved = task.scripted_improvement(q, attempt, feedback)
    assert isinstance(improved, str)
    old, new = split_steps(attempt), split_steps(improved)
    index = [step for step, _ in old].index(label)
    assert new[:index] == old[:index] and new[index] != old[index]
    assert task.verify(q, improved).correct and task.is_correct(q, improved)
    assert improved == SIOUX_RATIONALE  # the prefix was already gold


def test_improvement_drops_feedback_for_a_missing_step(sorter: WordSorting) -> None:
    feedback = Feedback(text="", correct=False, step="7.1", segment="x")
    assert isinstance(sorter.scripted_improvement(question(SIOUX), SIOUX_RATIONALE, feedback), Dropped)


def test_improvement_on_the_small_task(task: WordSorting) -> None:
    for q in task.questions("test"):
        gold = task.gold_rationale(q)
        label, line = split_steps(gold)[-2]  # the last "Hence": reverse its order
        words = line.split("Hence, we have ")[1].removesuffix(".").split(" < ")
        if len(set(words)) < 2:
            continue
        attempt = replace_step(gold, label, f"({label}) Hence, we have {' < '.join(reversed(words))}.")
        feedback = task.verify(q, attempt)
        assert feedback.step == label and "comes before" in feedback.text
        assert task.scripted_improvement(q, attempt, feedback) == gold
