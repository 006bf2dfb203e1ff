"""Date Understanding and Logical Deduction on small BIG-bench-format files written here, and rationale collection."""

import json
from collections.abc import Sequence

import pytest

from datamodules.interaction_log import read_shard
from feedback.base import Dropped
from feedback.collect_rationales import collect
from feedback.llm import LLMTeacher
from tasks.multiple_choice import DateUnderstanding, LogicalDeduction

DATES = ["01/0{}/2020".format(d) for d in range(1, 10)]


def write_du(path, n=8):
    examples = [{"input": f"Today is Jan {i + 1}, 2020. What is the date tomorrow in MM/DD/YYYY?",
                 "target_scores": {DATES[(i + 1) % 9]: 1, DATES[(i + 3) % 9]: 0, DATES[(i + 5) % 9]: 0}}
                for i in range(n)]
    path.write_text(json.dumps({"examples": examples}))
    return path


def rationale(option_date: str, letter: str, steps: int) -> str:
    lines = [f"({k}) Step {k} of the reasoning." for k in range(1, steps)]
    lines.append(f"({steps}) So tomorrow is {option_date}.")
    return "\n".join(lines + [f"(Final response) So the answer is {letter}."])


class ScriptTeacher(LLMTeacher):
    """Answers rationale prompts from a dict keyed by question text: (option date, steps) or None (wrong)."""

    name = "script-llm"

    def __init__(self, plan):
        super().__init__()
        self.plan = plan

    def complete(self, prompts: Sequence[str], temperature: float, max_tokens: int) -> list[str | Dropped]:
        out = []
        for prompt in prompts:
            question_line = prompt.rsplit("Q: ", 1)[1].split("\n")[0]
            choice = self.plan.get(question_line)
            out.append("\n" + choice if choice else "I don't know")
        return out


def du_plan(task, steps_of):
    """Right rationales (with ``steps_of(i)`` steps) for every question but the last, whose answer is wrong."""
    plan = {}
    for i, q in enumerate(task.pool()):
        date = task.option_text(q, q.answer)
        wrong = next(line[:3] for line in q.question.splitlines()[2:] if not line.startswith(q.answer))
        letter = q.answer if i < len(task.pool()) - 1 else wrong
        plan[q.question.split("\n")[0]] = rationale(date, letter, steps_of(i))
    return plan


def test_options_are_shuffled_and_the_answer_points_at_the_gold_option(tmp_path):
    task = DateUnderstanding(data_path=str(write_du(tmp_path / "du.json")))
    pool = task.pool()
    assert len(pool) == 8 and {q.answer for q in pool} != {"(A)"}  # BIG-bench lists the gold first; we shuffle
    for i, q in enumerate(pool):
        assert q.question.splitlines()[1] == "Options:" and task.option_text(q, q.answer) == DATES[(i + 1) % 9]
    q = pool[0]
    good = rationale(task.option_text(q, q.answer), q.answer, 2)
    assert task.extract_answer(good) == q.answer and task.is_correct(q, good)
    unsupported = good.replace(task.option_text(q, q.answer), "some day")  # right letter, reasoning elsewhere
    assert task.extract_answer(unsupported) == q.answer and not task.is_correct(q, unsupported)
    assert task.extract_answer("(1) x\n(Final response) I give up.") is None


def test_date_understanding_needs_rationales_and_buckets_by_their_length(tmp_path):
    task = DateUnderstanding(data_path=str(write_du(tmp_path / "du.json")))
    with pytest.raises(ValueError, match=r"python -m feedback.collect_rationales"):
        task.questions("train")
    shard = collect(task, ScriptTeacher(du_plan(task, lambda i: 3 if i % 4 == 0 else 2)), str(tmp_path / "r.jsonl"))
    episodes = read_shard(shard)
    assert [e.outcome for e in episodes] == ["correct"] * 7 + ["dropped"]
    assert episodes[-1].reason.startswith("chose (") and episodes[0].turns[0].by == "script-llm"
    task = DateUnderstanding(data_path=str(tmp_path / "du.json"), rationales=str(shard), num_test_seen=2)
    train, test = task.questions("train"), task.questions("test")
    # questions 0 and 4 have 3-step rationales (unseen test); 7 was wrong (excluded); 5 seen: 2 test, 3 train
    assert sorted(q.id for q in test if not q.seen) == ["du-0000", "du-0004"]
    assert len(train) == 3 and len([q for q in test if q.seen]) == 2 and all(q.bucket == "1-2 steps" for q in train)
    assert task.gold_rationale(train[0]) == episodes[int(train[0].id[-4:])].turns[0].text
    with pytest.raises(FileExistsError, match="never overwritten"):
        collect(task, ScriptTeacher({}), str(shard))


def test_bad_task_files_get_file_and_index_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="BIG-bench task file not found at .*nowhere.json"):
        DateUnderstanding(data_path=str(tmp_path / "nowhere.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"examples": [{"input": "q", "target_scores": {"a": 1, "b": 0}},
                                            {"input": "q", "target_scores": {"a": 1, "b": 1}}]}))
    with pytest.raises(ValueError, match=r"bad.json:1: expected exactly one option with score 1, found 2"):
        DateUnderstanding(data_path=str(bad))


def write_ld(folder):
    for size, word in ((3, "three"), (5, "five"), (7, "seven")):
        names = [f"o{k}" for k in range(size)]
        examples = [{"input": f"Puzzle {i} with {size} objects.",
                     "target_scores": {f"The {n} is the leftmost.": int(j == i % size) for j, n in enumerate(names)}}
                    for i in range(10)]
        prefix = f"The following paragraphs each describe a set of {word} objects.\n\n"
        (folder / f"logical_deduction_{word}_objects.json").write_text(json.dumps({"task_prefix": prefix, "examples": examples}))


def test_logical_deduction_splits_by_object_count(tmp_path):
    write_ld(tmp_path)
    task = LogicalDeduction(data_dir=str(tmp_path), num_test_seen=4, num_test_unseen=3)
    test = task.questions("test")
    assert sorted(q.bucket for q in test) == ["3 objects"] * 2 + ["5 objects"] * 2 + ["7 objects"] * 3
    assert [q.seen for q in test if q.bucket == "7 objects"] == [False] * 3
    assert len(task.pool()) == 16 and not {q.id for q in task.pool()} & {q.id for q in test}
    q = test[0]
    assert q.question.startswith("The following paragraphs each describe a set of")
    assert task.prompt(q).endswith('Answer: Let\'s think step by step. Let "??" represents 0 or more objects, and "?" '
                                   "represents exactly 1 object.\n")
    with pytest.raises(ValueError, match="training needs teacher rationales"):
        task.questions("train")
    option = task.option_text(q, q.answer)  # "The oK is the leftmost."
    good = f"(1) So {option[0].lower() + option[1:]}\n(Final response) So the answer is {q.answer}."
    assert task.is_correct(q, good) and not task.is_correct(q, "(1) Hm.\n(Final response) So the answer is " + q.answer + ".")
    with pytest.raises(ValueError, match="more test questions than"):
        LogicalDeduction(data_dir=str(tmp_path), num_test_seen=4, num_test_unseen=11)


def test_a_hub_copy_in_bigbench_layout_loads_through_datasets(fake_hub):
    splits = {"train": [{"inputs": "Q: Today is Jan 1, 2020. What is the date tomorrow?\n  A:",
                         "multiple_choice_targets": ["01/05/2020", "01/02/2020"], "multiple_choice_scores": [0, 1]}],
              "validation": [{"inputs": "Yesterday was Jan 1, 2020. What is today?",
                              "multiple_choice_targets": ["01/02/2020", "01/09/2020"], "multiple_choice_scores": [1, 0]}]}
    calls = fake_hub(splits)
    task = DateUnderstanding(data_path="hf:tasksource/bigbench/date_understanding")
    assert calls == [("tasksource/bigbench", "date_understanding", "train"),
                     ("tasksource/bigbench", "date_understanding", "validation")]
    first, second = task.pool()
    assert first.question.startswith("Today is Jan 1, 2020. What is the date tomorrow?\nOptions:\n")
    assert task.option_text(first, first.answer) == "01/02/2020" and task.option_text(second, second.answer) == "01/02/2020"
    splits["train"][0]["multiple_choice_scores"] = [0, 0]
    with pytest.raises(ValueError, match=r"\[train\]:row 0: expected exactly one option with score 1, found 0"):
        DateUnderstanding(data_path="hf:tasksource/bigbench/date_understanding")


def test_logical_deduction_from_a_hub_copy_sizes_questions_by_their_options(fake_hub):
    def row(size, i):
        names = [f"o{k}" for k in range(size)]
        return {"inputs": f"Q: The following paragraphs each describe a set of {size} objects. Puzzle {i}.\nA:",
                "multiple_choice_targets": [f"The {n} is the leftmost." for n in names],
                "multiple_choice_scores": [int(j == i % size) for j in range(size)]}

    # the HF layout mixes all three sizes in one config and splits each into train / validation
    splits = {"train": [row(size, i) for size in (7, 3, 5) for i in range(3)],
              "validation": [row(size, i) for size in (3, 5, 7) for i in range(3, 5)]}
    calls = fake_hub(splits)
    task = LogicalDeduction(data_dir="hf:tasksource/bigbench/logical_deduction", num_test_seen=2, num_test_unseen=4)
    assert calls == [("tasksource/bigbench", "logical_deduction", "train"),
                     ("tasksource/bigbench", "logical_deduction", "validation")]
    test = task.questions("test")
    # 5 puzzles per size: 1 + 1 seen and 4 of the 5 seven-object puzzles held out; the other 4 + 4 are the pool
    assert sorted(q.bucket for q in test) == ["3 objects", "5 objects"] + ["7 objects"] * 4
    assert {q.id for q in test if q.bucket == "7 objects"} < {f"ld7-{i:04d}" for i in range(5)}
    assert sorted(q.bucket for q in task.pool()) == ["3 objects"] * 4 + ["5 objects"] * 4
    q = next(q for q in test if q.bucket == "3 objects")
    assert q.question.startswith("The following paragraphs each describe a set of 3 objects. Puzzle ")
    assert q.question.count("\n(") == 3  # three options, one per object
    splits["validation"].append({**row(3, 9), "multiple_choice_targets": ["a", "b", "c", "d"],
                                 "multiple_choice_scores": [1, 0, 0, 0]})
    with pytest.raises(ValueError, match=r"expected 3, 5 or 7 options per question.*found \[4\].*data_dir"):
        LogicalDeduction(data_dir="hf:tasksource/bigbench/logical_deduction")
