"""Multistep arithmetic: TriPosT's rationale format, splits, answer parsing, scripted feedback and improvements."""

from __future__ import annotations

import re

import pytest

from feedback.base import Dropped, Feedback
from tasks import MultistepArithmetic, Question, expressions
from tasks.base import split_steps
from tasks.expressions import InvalidExpression, evaluate, parse_expr
from tasks.multistep_arithmetic import ANSWER_INFO, BUCKETS, multi_digit_factors

# verbatim from TriPosT's data/raw/multistep_arithmetic_scripted_rationales.jsonl (records 1 and 3)
EXAMPLE = "((7 - -1 + -1 + -4) - (-7 + 7 * 3 * -9))"
EXAMPLE_RATIONALE = """\
(1) This equation can be written as "(A - B)", where A = (7 - -1 + -1 + -4) and B = (-7 + 7 * 3 * -9).
(2) Let's calculate A = (7 - -1 + -1 + -4) = (((7 - -1) + -1) + -4) = ((8 + -1) + -4) = (7 + -4) = 3.
(3) Let's calculate B = (-7 + 7 * 3 * -9) = (-7 + ((7 * 3) * -9)) = (-7 + (21 * -9)) = (-7 + -189) = -196.
(4) Then, the final equation is (A - B) = (3 - -196) = 199.
(Final response) So the answer is 199."""
DEEP = ("((((-6 + 0 - -6) * (1 * 7 + 3)) + ((3 + 9 * -6) - (1 + 6 * 8))) + (((0 + -5 + 5) - (-5 * -4 * -7)) + "
        "((8 * 2 * -3) + (-8 * 3 - 0))))")
DEEP_LAST_STEPS = """\
(9) Let's calculate H = (-8 * 3 - 0) = ((-8 * 3) - 0) = (-24 - 0) = -24.
(10) Then, the final equation is (((A * B) + (C - D)) + ((E - F) + (G + H))) = (((0 * 10) + (-51 - 49)) + ((0 - -140) + (-48 + -24))) = ((0 + (-51 - 49)) + ((0 - -140) + (-48 + -24))) = ((0 + -100) + ((0 - -140) + (-48 + -24))) = ((0 + -100) + (140 + (-48 + -24))) = ((0 + -100) + (140 + -72)) = (-100 + (140 + -72)) = (-100 + 68) = -32.
(Final response) So the answer is -32."""

_ARITHMETIC = re.compile(r"[\d\s()+*-]+")


def oracle(text: str) -> int:
    """Independent evaluator for the tests: Python arithmetic on text that holds only digits and + - * ( )."""
    assert _ARITHMETIC.fullmatch(text), text
    return eval(text, {"__builtins__": {}})  # checked above to be plain integer arithmetic


def question(expression: str) -> Question:
    return Question("q", f"{expression} =", str(oracle(expression)), "l3-4d2", True)


def replace_step(rationale: str, label: str, new_line: str) -> str:
    return "\n".join(new_line if line.startswith(f"({label})") else line for line in rationale.splitlines())


@pytest.fixture(scope="module")
def task() -> MultistepArithmetic:
    return MultistepArithmetic(num_train=120, num_test_per_combo=10, seed=3)


# ------------------------------------------------------------------------------------------------ rationales


def test_reference_rationales_match_tripost(task: MultistepArithmetic) -> None:
    assert task.gold_rationale(question(EXAMPLE)) == EXAMPLE_RATIONALE
    assert task.gold_rationale(question(DEEP)).endswith(DEEP_LAST_STEPS)
    assert task.extract_answer(EXAMPLE_RATIONALE) == "199"


def test_repeated_leaves_get_their_own_names_and_steps(task: MultistepArithmetic) -> None:
    # TriPosT's str.replace named both copies "A" and repeated a step; we name positions and reduce once each
    rationale = task.gold_rationale(question("((2 * 1 + 3) - (2 * 1 + 3))"))
    assert 'written as "(A - B)", where A = (2 * 1 + 3) and B = (2 * 1 + 3).' in rationale
    assert "(-2 - (2 * -9)) = (-2 - (2 * -9))" not in task.gold_rationale(question("((2 * 1 + -4 - 2 * 1 * -9) + 1)"))


def test_gold_rationales_are_valid_for_many_questions(task: MultistepArithmetic) -> None:
    lead_in = re.compile(r"^\(\d+\) (Let's calculate [A-Z] = |Then, the final equation is )")
    for q in task.questions("train") + task.questions("test"):
        rationale = task.gold_rationale(q)
        steps = split_steps(rationale)
        assert [label for label, _ in steps] == [str(i) for i in range(1, len(steps))] + ["Final response"]
        for _, line in steps[1:-1]:
            assert lead_in.match(line), line
            pieces = lead_in.sub("", line).removesuffix(".").split(" = ")
            numeric = [p for p in pieces if _ARITHMETIC.fullmatch(p)]  # all but "(A - B)"-style heads
            assert len(numeric) >= 2 and len({oracle(p) for p in numeric}) == 1, line
            assert re.fullmatch(r"-?\d+", pieces[-1]), line
        assert task.extract_answer(rationale) == q.answer == str(oracle(q.question.removesuffix(" =")))
        assert steps[-2][1].endswith(f"= {q.answer}.")
        assert task.is_correct(q, rationale)
        assert task.verify(q, rationale).correct


# ------------------------------------------------------------------------------------------------ questions


def test_splits_buckets_and_determinism(task: MultistepArithmetic) -> None:
    train, test = task.questions("train"), task.questions("test")
    assert len(train) == 120 and len(test) == 12 * 10
    assert {q.bucket for q in train} == {"l3-4d2", "l3-4d22"} and all(q.seen for q in train)
    assert all(sum(q.bucket == b for q in train) == 60 for b in ("l3-4d2", "l3-4d22"))
    counts = {b: sum(q.bucket == b for q in test) for b in BUCKETS}
    assert counts == {"l3-4d2": 20, "l3-4d22": 20, "l3-4d222": 20, "l5-6d2": 20, "l5-6d22": 20, "l5-6d222": 20}
    assert [q.seen for q in test] == [q.bucket in ("l3-4d2", "l3-4d22") for q in test]
    assert not {q.question for q in train} & {q.question for q in test}
    assert len({q.id for q in train + test}) == len(train + test)
    assert task.buckets() == BUCKETS
    again = MultistepArithmetic(num_train=120, num_test_per_combo=10, seed=3)
    assert again.questions("train") == train and again.questions("test") == test
    assert MultistepArithmetic(num_train=120, num_test_per_combo=10, seed=4).questions("test") != test
    with pytest.raises(ValueError, match="unknown split"):
        task.questions("validation")


def test_question_shape_and_prompt(task: MultistepArithmetic) -> None:
    leaf = r"\((-?\d)( [-+*] -?\d)+\)"
    for q in task.questions("test"):
        assert q.question.endswith(" =")
        length = 3 if q.bucket.startswith("l3-4") else 5
        depth = len(q.bucket.split("d")[1])
        leaves = re.findall(r"\([^()]*\)", q.question)
        assert len(leaves) == 2**depth and all(re.fullmatch(leaf, x) for x in leaves)
        assert {len(x.split()) // 2 + 1 for x in leaves} <= {length, length + 1}
    q = task.questions("train")[0]
    assert task.prompt(q) == f"Q: {q.question}\nAnswer: Let's think step by step.{ANSWER_INFO}\n"
    assert ANSWER_INFO.startswith(" Recall that the order of operations") and ANSWER_INFO.endswith("first.")


@pytest.mark.parametrize(("line", "answer"), [
    ("(Final response) So the answer is -7.", "-7"),
    ("(Final response) So the answer is +7.", "7"),
    ("(Final response) So the answer is -7.0.", "-7"),
    ("(Final response) So the answer is 1,234.", "1234"),
    ("(Final response) So the answer is seven.", None),
    ("(4) So the answer is 3.", None),
])
def test_extract_answer(task: MultistepArithmetic, line: str, answer: str | None) -> None:
    assert task.extract_answer(f"(1) Then, the final equation is 1 = 1.\n{line}") == answer


def test_is_correct_needs_valid_content(task: MultistepArithmetic) -> None:
    q = question(EXAMPLE)
    assert task.is_correct(q, EXAMPLE_RATIONALE)
    assert not task.is_correct(q, EXAMPLE_RATIONALE.replace("= 199.\n", "= 198.\n"))  # right answer, wrong step
    assert not task.is_correct(q, EXAMPLE_RATIONALE.replace("is 199.", "is 198."))


# ------------------------------------------------------------------------------------------------ feedback

WRONG_CALCULATION = replace_step(
    EXAMPLE_RATIONALE, "3",
    "(3) Let's calculate B = (-7 + 7 * 3 * -9) = (-7 + ((7 * 3) * -9)) = (-7 + (21 * -9)) = (-7 + -198) = -205.",
)


def test_feedback_on_a_wrong_calculation_mid_chain(task: MultistepArithmetic) -> None:
    feedback = task.verify(question(EXAMPLE), WRONG_CALCULATION)
    assert feedback.text == (
        'Step (1) to step (2) are correct. In step (3) the part "(-7 + (21 * -9)) = (-7 + -198)" is incorrect. '
        "This is because there is a calculation error, since (-7 + (21 * -9)) is not equal to (-7 + -198)."
    )
    assert Feedback.parse(feedback.text) == feedback


def test_feedback_matches_the_reference_example(task: MultistepArithmetic) -> None:
    q = question("((-9 + -6 + 8 * 1) * (2 - 3 + 4))")
    attempt = replace_step(task.gold_rationale(q), "2",
                           "(2) Let's calculate A = (-9 + -6 + 8 * 1) = ((-9 + -6) + 8 * 1) = (-15 + 8 * 1) = -3.")
    feedback = task.verify(q, attempt)
    assert (feedback.step, feedback.segment) == ("2", "(-15 + 8 * 1) = -3")
    assert feedback.text.startswith("Step (1) is correct. In step (2)")
    assert feedback.text.endswith("since (-15 + 8 * 1) is not equal to -3.")


@pytest.mark.parametrize(("label", "line", "segment", "reason"), [
    ("1", '(1) This equation can be written as "(A - B)", where A = (7 - -1 + -1 + -4) and B = (-7 + 7 * 3 * 9).',
     "B = (-7 + 7 * 3 * 9)", "it is not consistent with the original equation"),
    ("1", '(1) This equation can be written as "(A + B)", where A = (7 - -1 + -1 + -4) and B = (-7 + 7 * 3 * -9).',
     "(A + B)", "it is not consistent with the original equation"),
    ("2", "(2) Let's calculate A = (7 - -1 + -1 + -4) = ((8 + -1) + -4) = (7 + ) = 3.", "(7 + )",
     "it is not a valid equation"),
    ("2", "(2) Let's calculate A = (7 - -1 + -1 + -4 = 3.", "(7 - -1 + -1 + -4",
     "it is not a valid equation as the number of left and right brackets do not match"),
    ("2", "(2) Let's calculate A = (7 - 1 + -1 + -4) = 1.", "A = (7 - 1 + -1 + -4)",
     "step (1) defines A as (7 - -1 + -1 + -4)"),
    ("4", "(4) Then, the final equation is (A - B) = (3 - -169) = 172.", "(A - B) = (3 - -169)",
     "this substitution is inconsistent with the results in the previous steps"),
    ("4", "(4) Then, the final equation is (A + B) = (3 + -196) = -193.", "(A + B)",
     "this equation is inconsistent with the question statement"),
    ("4", "(4) Then, the final equation is (A - B) = (3 - -196).", "(3 - -196)",
     "the calculation is not finished, since (3 - -196) is not a number"),
    ("Final response", "(Final response) So the answer is 198.", "the answer is 198.",
     "this answer is inconsistent with the result in step (4)"),
    ("Final response", "(Final response) So the answer is unknown.", "So the answer is unknown.",
     "it does not state a numerical answer"),
    ("3", "(3) We now add them up.", "We now add them up.", "it is not a valid equation"),
])
def test_feedback_names_the_step_segment_and_reason(
    task: MultistepArithmetic, label: str, line: str, segment: str, reason: str
) -> None:
    feedback = task.verify(question(EXAMPLE), replace_step(EXAMPLE_RATIONALE, label, line))
    assert (feedback.correct, feedback.step, feedback.segment) == (False, label, segment)
    assert feedback.text.endswith(f"This is because {reason}.")
    assert segment in line


def test_feedback_on_a_variable_never_calculated(task: MultistepArithmetic) -> None:
    lines = EXAMPLE_RATIONALE.splitlines()
    attempt = "\n".join([lines[0], lines[1], lines[3].replace("(4)", "(3)"), lines[4]])
    feedback = task.verify(question(EXAMPLE), attempt)
    assert (feedback.step, feedback.segment) == ("3", "(A - B) = (3 - -196)")
    assert "the value of B has not been calculated in previous steps" in feedback.text


def test_feedback_on_wrong_step_numbers(task: MultistepArithmetic) -> None:
    feedback = task.verify(question(EXAMPLE), EXAMPLE_RATIONALE.replace("(3) Let's", "(2) Let's"))
    assert (feedback.step, feedback.segment) == ("2", "(2)")
    assert "this step should be numbered (3)" in feedback.text


def test_correct_and_unjudgeable_attempts(task: MultistepArithmetic) -> None:
    assert task.verify(question(EXAMPLE), EXAMPLE_RATIONALE).text == (
        "Step (1) to step (4) are correct. The final response is also correct."
    )
    with pytest.raises(ValueError, match="Final response"):
        task.verify(question(EXAMPLE), "\n".join(EXAMPLE_RATIONALE.splitlines()[:3]))
    with pytest.raises(ValueError, match="no numbered steps"):
        task.verify(question(EXAMPLE), "I do not know.")


@pytest.mark.parametrize("text", ["9" * 5000, "9 ** 9 ** 9", "__import__('os').system('true')", "(" * 500 + "1",
                                  "1.5 + 2", "True + 1", "x + 1", "2 / 3", "1 + " * 400 + "1", "-" * 900 + "1"])
def test_untrusted_expressions_are_rejected_quickly(text: str, monkeypatch) -> None:
    """Quickly = after bounded work, counted rather than timed (timings flake on a loaded machine)."""
    calls = {"parse": 0, "convert": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(expressions.ast, "parse", counting("parse", expressions.ast.parse))
    monkeypatch.setattr(expressions, "_convert", counting("convert", expressions._convert))  # recursion counts too
    with pytest.raises(InvalidExpression):
        evaluate(parse_expr(text))
    assert calls["parse"] == (0 if len(text) > 2000 else 1)  # over-long text is never parsed
    # the depth cap of 100: at most the nodes at depths 0..101 of one branch are converted before giving up
    # ("1 + 1 + ..." and "---...1" hit it; the others stop at their first or second node)
    assert calls["convert"] <= 102


def test_huge_products_are_rejected() -> None:
    with pytest.raises(InvalidExpression):
        evaluate(parse_expr(" * ".join(["999999999"] * 40)))
    assert evaluate(parse_expr("(3 - -196) * -1")) == -199


@pytest.mark.parametrize("expression, factors", [
    ("((1 + 2) - (3 * 4))", 0),
    ("((9 * 9) + (9 * 9 - -9))", 0),        # large sums do not count, only products
    ("((7 * -2) * (3 + 4))", 1),            # -14 * 7
    (EXAMPLE, 1),                           # 21 * -9 in step (3)
    (DEEP, 1),                              # 0 * 10, 20 * -7, 16 * -3
    ("((7 * -2 * 3) * (5 * 5 - 1))", 2),    # -42 * 24
])
def test_multi_digit_factors_of_the_hardest_product(expression: str, factors: int) -> None:
    assert multi_digit_factors(expression) == factors


# ------------------------------------------------------------------------------------------------ improvement


def assert_good_improvement(task: MultistepArithmetic, q: Question, attempt: str, improved: str | Dropped) -> None:
    assert isinstance(improved, str)
    feedback = task.verify(q, attempt)
    old, new = split_steps(attempt), split_steps(improved)
    index = [label for label, _ in old].index(feedback.step)
    assert new[:index] == old[:index] and new[index] != old[index]
    assert task.verify(q, improved).correct and task.is_correct(q, improved)


def test_improvement_keeps_the_prefix_and_fixes_the_rest(task: MultistepArithmetic) -> None:
    q = question(EXAMPLE)
    for attempt in (WRONG_CALCULATION, EXAMPLE_RATIONALE.replace("is 199.", "is 198.")):
        improved = task.scripted_improvement(q, attempt, task.verify(q, attempt))
        assert_good_improvement(task, q, attempt, improved)
    assert task.scripted_improvement(q, WRONG_CALCULATION, task.verify(q, WRONG_CALCULATION)) == EXAMPLE_RATIONALE


def test_improvement_of_a_wrong_partition_rewrites_everything(task: MultistepArithmetic) -> None:
    q = question(EXAMPLE)
    attempt = EXAMPLE_RATIONALE.replace('"(A - B)"', '"(A + B)"')
    assert task.scripted_improvement(q, attempt, task.verify(q, attempt)) == EXAMPLE_RATIONALE


def test_improvement_solves_from_the_attempts_own_partition(task: MultistepArithmetic) -> None:
    q = question(EXAMPLE)
    attempt = """\
(1) This equation can be written as "(B - A)", where B = (7 - -1 + -1 + -4) and A = (-7 + 7 * 3 * -9).
(2) Let's calculate B = (7 - -1 + -1 + -4) = (((7 - -1) + -1) + -4) = ((8 + -1) + -4) = (7 + -4) = 3.
(3) Let's calculate A = (-7 + 7 * 3 * -9) = -190.
(4) Then, the final equation is (B - A) = (3 - -190) = 193.
(Final response) So the answer is 193."""
    feedback = task.verify(q, attempt)
    assert (feedback.step, feedback.segment) == ("3", "(-7 + 7 * 3 * -9) = -190")
    improved = task.scripted_improvement(q, attempt, feedback)
    assert_good_improvement(task, q, attempt, improved)
    assert isinstance(improved, str) and "(3) Let's calculate A = (-7 + 7 * 3 * -9) = (-7 + ((7 * 3)" in improved
    assert "(4) Then, the final equation is (B - A) = (3 - -196) = 199." in improved


def test_improvement_of_random_corruptions(task: MultistepArithmetic) -> None:
    for q in task.questions("test")[::7]:
        gold = task.gold_rationale(q)
        for label, line in split_steps(gold):
            # the last number: a step's result, or a leaf of the partition, so the step is really wrong
            m = list(re.finditer(r"(?<=[ (])-?\d+(?=[).])", line))[-1]
            attempt = replace_step(gold, label, line[: m.start()] + str(int(m.group()) + 1) + line[m.end():])
            feedback = task.verify(q, attempt)
            assert not feedback.correct and feedback.step == label
            assert_good_improvement(task, q, attempt, task.scripted_improvement(q, attempt, feedback))


def test_improvement_with_feedback_for_a_missing_step(task: MultistepArithmetic) -> None:
    feedback = Feedback(text="", correct=False, step="9", segment="x")
    assert isinstance(task.scripted_improvement(question(EXAMPLE), WRONG_CALCULATION, feedback), Dropped)
