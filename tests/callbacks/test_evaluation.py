"""The evaluation's numbers, checked against hand counts: accuracy per bucket and how well the model judges its own
first attempt."""

import json
import random
from types import SimpleNamespace

import pytest

from callbacks.evaluation import SelfImproveEval, accuracy_by_group, self_check, token_budget_warnings
from modules.tripost import Trace
from tasks.base import Question

CORRECT = "Step (1) to step (3) are correct. The final response is also correct."
ERROR = 'Step (1) is correct. In step (2) the part "7" is incorrect. This is because 3 + 5 is 8.'


def test_self_check_rates_count_each_verdict_against_the_truth():
    correct = [True, True, False, False, False, True]
    feedbacks = [CORRECT, ERROR, CORRECT, CORRECT, ERROR, None]
    assert self_check(correct, feedbacks) == pytest.approx({
        "self_check/no_feedback": 100 / 6,  # the sixth attempt has no feedback after it
        "self_check/wrong_called_correct": 200 / 3,  # 2 of the 3 wrong attempts called correct
        "self_check/right_called_wrong": 50.0,  # 1 of the 2 judged correct attempts called wrong
    })


def test_self_check_leaves_out_rates_with_nothing_to_count():
    assert self_check([False, False], [None, None]) == {"self_check/no_feedback": 100.0}
    assert self_check([False], [CORRECT]) == {"self_check/no_feedback": 0.0, "self_check/wrong_called_correct": 100.0}


def test_accuracy_by_group_per_bucket_seen_unseen_and_total():
    def question(i, bucket, seen):
        return Question(id=str(i), question="", answer="", bucket=bucket, seen=seen)

    questions = [question(0, "a", True), question(1, "a", True), question(2, "b", True), question(3, "c", False)]
    assert accuracy_by_group(None, questions, [True, False, True, False], "before") == pytest.approx({
        "before/a": 50.0, "before/seen": 200 / 3, "before/total": 50.0, "before/b": 100.0, "before/c": 0.0,
        "before/unseen": 0.0})


class WordTokenizer:
    """One token per whitespace-separated word, so lengths can be counted by eye."""

    def encode(self, text, add_special_tokens=False):
        return text.split()


def test_token_budget_warns_about_cut_off_answers_and_no_room_to_revise():
    prompt = "Q: x\nAnswer: Let's think step by step.\n"  # "Updated Answer: Let's think step by step." is 7 words
    rationales = {
        "a": "(1) 1 + 2 = 3.\n(Final response) So the answer is 3.",  # 6 + 7 = 13 words
        "b": "(1) 2 * 3 = 6.\n(2) 6 + 1 = 7.\n(Final response) So the answer is 7.",  # 6 + 6 + 7 = 19 words
        "c": "(Final response) So the answer is 5.",  # 7 words
    }
    task = SimpleNamespace(prompt=lambda q: prompt, gold_rationale=lambda q: rationales[q.id])
    questions = [Question("a", "x", "3", "b1", True), Question("b", "x", "7", "b2", False),
                 Question("c", "x", "5", "b1", True)]
    # attempt + "Feedback:" (1) + "Step (1) to step (k) are correct. The final response is also correct." (13)
    # + updated header (7) + the rationale again: a 13+1+13+7+13 = 47, b 19+1+13+7+19 = 59, c 7+1+13+7+7 = 35
    tok = WordTokenizer()
    assert token_budget_warnings(task, tok, questions, 59) == []  # 59 fits b exactly
    (revise,) = token_budget_warnings(task, tok, questions, 58)  # only b (59) does not fit
    assert revise.startswith("max_new_tokens=58: for 1 of 3 test questions an attempt, its feedback and an updated")
    assert revise.endswith("raise --model.init_args.max_new_tokens (at least 59 fits them all)")
    # two continuations give a round 3 x 20 = 60 tokens: b (59) fits; 3 x 19 = 57 does not, and 59 needs 20 a call
    assert token_budget_warnings(task, tok, questions, 20, max_continuations=2) == []
    (revise,) = token_budget_warnings(task, tok, questions, 19, max_continuations=2)
    assert revise.startswith("max_new_tokens=19 and max_continuations=2 (57 tokens a round): for 1 of 3 test")
    assert revise.endswith("(at least 20 fits them all)")
    (revise,) = token_budget_warnings(task, tok, questions, 19)  # b's attempt (19) still fits; no update does
    assert "for 3 of 3 test questions" in revise
    cut, revise = token_budget_warnings(task, tok, questions, 12)  # a (13, seen) and b (19, unseen) are cut
    assert cut == ("max_new_tokens=12: 2 of 3 test questions (1 seen) have gold answers longer than that (up to 19 "
                   "tokens), so attempts at them are cut off before their final response and count as wrong; "
                   "raise --model.init_args.max_new_tokens")
    assert "for 3 of 3 test questions" in revise and "at least 59 fits them all" in revise


class ScriptedPolicy:
    """Stands in for the TriPosT module: ``self_improve`` returns the traces the test wrote; ``log`` records."""

    def __init__(self, traces):
        self.hparams = SimpleNamespace(max_rounds=3, max_new_tokens=512, max_continuations=2)
        self.traces, self.calls, self.logged = traces, [], {}

    def finished_stage(self, epoch):
        return 1

    def self_improve(self, task, questions, max_rounds, temperature=0.0, progress=None):
        self.calls.append(([q.id for q in questions], max_rounds, temperature))
        return [self.traces[q.id] for q in questions]

    def log(self, name, value, **kwargs):
        self.logged[name] = value


def test_eval_scores_first_attempt_before_and_last_attempt_after(ma_task, tmp_path, monkeypatch):
    q = ma_task.questions("test")[:5]  # buckets l3-4d2, l3-4d22, l3-4d222 (unseen), l3-4d2, l3-4d22
    assert [(x.bucket, x.seen) for x in q] == [("l3-4d2", True), ("l3-4d22", True), ("l3-4d222", False),
                                               ("l3-4d2", True), ("l3-4d22", True)]
    gold = [ma_task.gold_rationale(x) for x in q]
    wrong = [ma_task.slipped_rationale(x, random.Random(0)) for x in q]  # a slip in the last step: wrong
    assert not any(ma_task.is_correct(x, w) for x, w in zip(q, wrong))
    # the right final answer after a step whose result is not it: the paper's metric counts it, the strict one not
    unsupported = gold[3].replace("(36 * -26) = -936.", "(36 * -26) = -935.")
    assert ma_task.answer_matches(q[3], unsupported) and not ma_task.is_correct(q[3], unsupported)
    traces = {  # attempts, own feedbacks                       first -> last
        q[0].id: Trace([wrong[0], gold[0]], [ERROR, CORRECT]),  # wrong -> right
        q[1].id: Trace([gold[1], wrong[1]], [ERROR, None]),  # right -> wrong (revised a right answer)
        q[2].id: Trace([wrong[2], gold[2], wrong[2]], [ERROR, ERROR, None], continuations=1, forced_updates=1,
                       cut_off=True),  # wrong -> wrong, right in between
        q[3].id: Trace([unsupported], [None]),  # right (strict: wrong), no feedback
        q[4].id: Trace([wrong[4], gold[4]], [ERROR, CORRECT], forced_updates=1),  # wrong -> right
    }
    policy = ScriptedPolicy(traces)
    datamodule = SimpleNamespace(task=ma_task, test_questions=lambda: ma_task.questions("test"),
                                 last_counts={"improvement": 3, "gold": 2})
    trainer = SimpleNamespace(datamodule=datamodule, current_epoch=5, logger=None, log_dir=str(tmp_path),
                              is_global_zero=True)
    printed = []
    monkeypatch.setattr("callbacks.evaluation.rank_zero_info", printed.append)
    callback = SelfImproveEval(max_rounds=2, num_questions=5)
    callback.on_train_epoch_end(trainer, policy)
    callback.on_fit_end(trainer, policy)

    assert policy.calls == [([x.id for x in q], 2, 0.0)]  # the first 5 test questions, greedy, 2 rounds
    # l3-4d2 (q0, q3): before F,T = 50, after T,T = 100; l3-4d22 (q1, q4): before T,F = 50, after F,T = 50;
    # l3-4d222 (q2): 0 -> 0; seen (q0 q1 q3 q4): before 2/4 = 50, after 3/4 = 75; unseen 0 -> 0;
    # total: before 2/5 = 40, after 3/5 = 60
    expected = {"before/l3-4d2": 50.0, "after/l3-4d2": 100.0, "before/l3-4d22": 50.0, "after/l3-4d22": 50.0,
                "before/l3-4d222": 0.0, "after/l3-4d222": 0.0, "before/seen": 50.0, "after/seen": 75.0,
                "before/unseen": 0.0, "after/unseen": 0.0, "before/total": 40.0, "after/total": 60.0,
                # strict: q3 is wrong; before only q1 is right, after q0 and q4
                "strict/before/l3-4d2": 0.0, "strict/after/l3-4d2": 50.0, "strict/before/l3-4d22": 50.0,
                "strict/after/l3-4d22": 50.0, "strict/before/l3-4d222": 0.0, "strict/after/l3-4d222": 0.0,
                "strict/before/seen": 25.0, "strict/after/seen": 50.0, "strict/before/unseen": 0.0,
                "strict/after/unseen": 0.0, "strict/before/total": 20.0, "strict/after/total": 40.0,
                # updates written for q0 q1 q2 q4: q0 and q4 wrong -> right, q1 right -> wrong, q2 wrong -> wrong
                "revised/answers": 4.0, "revised/to_right": 2.0, "revised/to_wrong": 1.0,
                "rounds": 2.0,  # (2 + 2 + 3 + 1 + 2) attempts / 5
                "loop/continuations": 1.0, "loop/forced_updates": 2.0, "loop/cut_off": 1.0,  # q2's and q4's traces
                # first feedbacks (strict): q3 none (1/5); wrong q0 q2 q4 all called wrong (0/3); right q1 called
                # wrong (1/1)
                "self_check/no_feedback": 20.0, "self_check/wrong_called_correct": 0.0,
                "self_check/right_called_wrong": 100.0}
    assert policy.logged == pytest.approx({f"eval/{k}": v for k, v in expected.items()})
    mix = {"examples/improvement": 3.0, "examples/gold": 2.0}  # in the table, not logged again
    assert json.loads((tmp_path / "eval_table.json").read_text()) == [pytest.approx({"stage": 1, **expected, **mix})]
    # columns l3-4d2, l3-4d22, l3-4d222, seen, unseen, total, each right-aligned in 15 characters, revised (+right/
    # -wrong) in 16, then strict seen, unseen, total
    row = ("TriPosT t=1   " "  50.0 -> 100.0" "   50.0 -> 50.0" "     0.0 -> 0.0" "   50.0 -> 75.0" "     0.0 -> 0.0"
           "   40.0 -> 60.0" "       4 (+2/-1)" "  |" "   25.0 -> 50.0" "     0.0 -> 0.0" "   20.0 -> 40.0")
    assert len(printed) == 2 and printed[0].splitlines()[2] == row
    assert printed[1].startswith("\nFinal accuracy (%), before -> after") and printed[1].splitlines()[-1] == row


def test_a_tripost_row_trained_on_gold_alone_is_starred():
    from callbacks.evaluation import format_table

    task = SimpleNamespace(buckets=lambda: ["b"])
    cells = {"before/total": 10.0, "after/total": 20.0}
    rows = [{"stage": 0, **cells, "examples/gold": 8.0},  # the warm-up is gold by design: no star
            {"stage": 1, **cells, "examples/gold": 8.0},  # min_examples=0 and an empty shard
            {"stage": 2, **cells, "examples/improvement": 4.0, "examples/gold": 3.0}]
    lines = format_table(rows, task).splitlines()
    assert [line[:14] for line in lines[2:5]] == ["ft rationale  ", "TriPosT t=1*  ", "TriPosT t=2   "]
    assert lines[5] == "* trained on gold demos alone: its shard gave no examples (--data.init_args.min_examples=0)"
