"""Multistep arithmetic (BIG-bench generator, TriPosT's scripted rationales, feedback and improvements).

A question is a tree of binary operations over flat parenthesised leaves of ``length`` integers in −9..9, e.g.
``((7 - -1 + -1 + -4) - (-7 + 7 * 3 * -9))`` (depth 1). The gold rationale names the leaves ``A, B, ...``
(partition step), calculates each leaf by reducing its innermost operations one at a time, then the final
equation, exactly as TriPosT's ``get_rationale.py`` does.

Model text is untrusted: expressions go through ``tasks.expressions`` (parsed with ``ast``, evaluated by hand with
a size cap, never with ``eval``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from feedback.base import Dropped, Feedback, error_feedback
from tasks.base import Question, Task, correct_feedback, split_steps
from tasks.expressions import (
    Expr,
    InvalidExpression,
    evaluate,
    parse_expr,
    reduction_steps,
    render,
    substitute,
    variables,
)

ANSWER_INFO = (
    " Recall that the order of operations in mathematics is as follows: (1) Parentheses, (2) exponents,"
    " (3) multiplication and division (from left to right), (4) addition and multiplication (from left to right)."
    " So, remember to always compute the expressions inside parentheses or brackets first."
)
BUCKETS = ["l3-4d2", "l3-4d22", "l3-4d222", "l5-6d2", "l5-6d22", "l5-6d222"]
SEEN_BUCKETS = BUCKETS[:2]
LENGTHS = (3, 4, 5, 6)
DEPTHS = (1, 2, 3)  # number of binary levels above the leaves: BIG-bench depth_levels [2], [2, 2], [2, 2, 2]
VARIABLES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_LEAF = re.compile(r"\([^()]*\)")


# --------------------------------------------------------------------------------------------------------------
# Gold rationale, solvable from any partition
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """Step (1): the question with sub-expressions named, e.g. ``(A - B)`` with ``{"A": "(7 - -1 + -1 + -4)"}``.

    Texts are kept as written (the gold ones come from the question) so that steps can quote them verbatim.
    """

    expression: str
    leaves: dict[str, str]

    def values(self) -> dict[str, int]:
        return {var: evaluate(parse_expr(text)) for var, text in self.leaves.items()}


def question_expression(question: Question) -> str:
    """``"((1 + 2) - (3 * 4)) ="`` -> ``"((1 + 2) - (3 * 4))"``."""
    return question.question.strip().removesuffix("=").strip()


def gold_partition(expression: str) -> Partition:
    """Name every innermost parenthesised group A, B, ... left to right (positional, so repeats get new names)."""
    leaves: dict[str, str] = {}

    def name(match: re.Match[str]) -> str:
        if len(leaves) == len(VARIABLES):
            raise ValueError(f"more than {len(VARIABLES)} leaves in {expression!r}")
        var = VARIABLES[len(leaves)]
        leaves[var] = match.group(0)
        return var

    return Partition(_LEAF.sub(name, expression), leaves)


def partition_step(partition: Partition) -> str:
    defs = [f"{var} = {text}" for var, text in partition.leaves.items()]
    listing = defs[0] if len(defs) == 1 else ", ".join(defs[:-1]) + " and " + defs[-1]
    return f'This equation can be written as "{partition.expression}", where {listing}.'


def calculate_step(var: str, text: str) -> str:
    """``Let's calculate A = (leaf) = (fully parenthesised) = ... = value.``"""
    tree = parse_expr(text)
    forms = [text] + [render(f) for f in [tree, *reduction_steps(tree)]]
    forms = [f for i, f in enumerate(forms) if i == 0 or f != forms[i - 1]]  # (3) = (3) would say nothing
    return f"Let's calculate {var} = {' = '.join(forms)}."


def final_equation_step(partition: Partition) -> str:
    """``Then, the final equation is (A - B) = (3 - -196) = 199.``"""
    filled = substitute(parse_expr(partition.expression), partition.values())
    forms = [partition.expression] + [render(f) for f in [filled, *reduction_steps(filled)]]
    return f"Then, the final equation is {' = '.join(forms)}."


def solve_from(partition: Partition, first_label: int, done: Collection[str] = (), combined: bool = False) -> list[str]:
    """Steps after a (verified) partition: calculate each variable not in ``done``, the final equation unless
    ``combined``, and the final response; numbered from ``first_label``."""
    lines = [calculate_step(var, text) for var, text in partition.leaves.items() if var not in done]
    if not combined:
        lines.append(final_equation_step(partition))
    numbered = [f"({first_label + i}) {line}" for i, line in enumerate(lines)]
    answer = evaluate(substitute(parse_expr(partition.expression), partition.values()))
    return [*numbered, f"(Final response) So the answer is {answer}."]


def solve(expression: str) -> str:
    partition = gold_partition(expression)
    return "\n".join([f"(1) {partition_step(partition)}", *solve_from(partition, 2)])


def multi_digit_factors(expression: str) -> int:
    """How hard the gold rationale's hardest product is: the most factors of one multiplication, among all it
    performs, that have two or more digits (0, 1 or 2). ``((7 * -2) * (3 + 4))`` -> 1 (``-14 * 7``).

    Every operation of the question is done once, on the values of its operands, whatever the partition, so the
    question's own tree holds them all."""

    def walk(expr: Expr) -> tuple[int, int]:  # (value, hardest product so far)
        if not isinstance(expr, tuple):
            return evaluate(expr), 0
        (a, hard_a), (b, hard_b) = walk(expr[0]), walk(expr[2])
        here = (abs(a) > 9) + (abs(b) > 9) if expr[1] == "*" else 0
        return evaluate((a, expr[1], b)), max(here, hard_a, hard_b)

    return walk(parse_expr(expression))[1]


# --------------------------------------------------------------------------------------------------------------
# Scripted verifier (reference §4, "Scripted FBK — multistep arithmetic")
# --------------------------------------------------------------------------------------------------------------

_PARTITION = re.compile(r'^This equation can be written as "(?P<expr>[^"]*)",? where (?P<defs>.*?)\.?$')
_DEFINITION = re.compile(r"(?P<var>[A-Z]) = (?P<text>\(.*?\)|-?\d+)(?=, | and |$)")
_CALCULATE = re.compile(r"^Let's calculate (?P<var>[A-Z]) = (?P<chain>.*?)\.?$")
_COMBINE = re.compile(r"^Then, the final equation is (?P<chain>.*?)\.?$")
_ANSWER = re.compile(r"the answer is (?P<answer>.*?)\.?\s*$")
_INTEGER = re.compile(r"(?P<int>[+-]?\d{1,60})(?:\.0*)?")

Error = tuple[str, str]  # (segment quoted from the step, reason)


@dataclass
class _State:
    """What the verified steps so far established."""

    target: int
    partition: Partition | None = None
    partition_label: str = ""
    values: dict[str, int] = field(default_factory=dict)
    combined: bool = False
    last_value: int | None = None
    last_label: str = ""


def _content(label: str, line: str) -> str:
    return line[len(label) + 2 :].strip()


def _invalid(piece: str) -> Error:
    reason = "it is not a valid equation"
    if piece.count("(") != piece.count(")"):
        reason += " as the number of left and right brackets do not match"
    return piece, reason


def _chain(chain: str) -> list[tuple[str, int, int]]:
    """Split ``a = b = c`` into stripped pieces with their spans in ``chain`` (to quote segments verbatim)."""
    pieces, start = [], 0
    for part in chain.split("="):
        lead = len(part) - len(part.lstrip())
        pieces.append((part.strip(), start + lead, start + lead + len(part.strip())))
        start += len(part) + 1
    return pieces


def _values(pieces: list[tuple[str, int, int]], env: dict[str, int]) -> list[int] | Error:
    """Values of the pieces of an ``=`` chain, or the error of the first piece that has none."""
    values = []
    for text, _, _ in pieces:
        try:
            tree = parse_expr(text)
        except InvalidExpression:
            return _invalid(text)
        missing = [var for var in variables(tree) if var not in env]
        if missing:
            return text, f"the value of {missing[0]} has not been calculated in previous steps"
        values.append(evaluate(tree, env))
    return values


def _check_pairs(chain: str, pieces: list[tuple[str, int, int]], values: list[int], first: int) -> Error | None:
    """Every consecutive pair of the chain from index ``first`` on must have equal values."""
    for i in range(first, len(pieces) - 1):
        if values[i] != values[i + 1]:
            (lhs, start, _), (rhs, _, end) = pieces[i], pieces[i + 1]
            return chain[start:end], f"there is a calculation error, since {lhs} is not equal to {rhs}"
    return None


def _check_finished(pieces: list[tuple[str, int, int]]) -> Error | None:
    """A chain must end in its result (TriPosT's final response check reads the number after the last ``=``)."""
    last = pieces[-1][0]
    if isinstance(parse_expr(last), int):
        return None
    return last, f"the calculation is not finished, since {last} is not a number"


def _check_partition(content: str, label: str, state: _State, question_tree: Expr) -> Error | None:
    match = _PARTITION.match(content)
    definitions = list(_DEFINITION.finditer(match["defs"])) if match else []
    if not match or not definitions:
        return _invalid(content)
    try:
        expression = parse_expr(match["expr"])
    except InvalidExpression:
        return _invalid(match["expr"])
    leaves: dict[str, str] = {}
    for definition in definitions:
        try:
            parse_expr(definition["text"])
        except InvalidExpression:
            return _invalid(definition.group(0))
        leaves[definition["var"]] = definition["text"]
    undefined = [var for var in variables(expression) if var not in leaves]
    if undefined:
        return match["expr"], f"the variable {undefined[0]} is not defined in this step"
    offending = _partition_mismatch(expression, question_tree, leaves)
    if offending is not None:
        segment = next((d.group(0) for d in definitions if d["var"] == offending), match["expr"])
        return segment, "it is not consistent with the original equation"
    state.partition, state.partition_label = Partition(match["expr"], leaves), label
    state.values, state.combined = {}, False
    return None


def _partition_mismatch(expr: Expr, question: Expr, leaves: dict[str, str]) -> str | None:
    """The variable whose definition differs from the question's sub-expression at its place; ``""`` when the
    partitioned expression's own shape differs; None when substituting back gives the question."""
    if isinstance(expr, str):
        return None if parse_expr(leaves[expr]) == question else expr
    if isinstance(expr, tuple) and isinstance(question, tuple) and expr[1] == question[1]:
        left = _partition_mismatch(expr[0], question[0], leaves)
        return left if left is not None else _partition_mismatch(expr[2], question[2], leaves)
    return None if expr == question else ""


def _check_calculate(match: re.Match[str], state: _State) -> Error | None:
    var, chain = match["var"], match["chain"]
    pieces = _chain(chain)
    if state.partition is None or var not in state.partition.leaves:
        return f"{var} = {pieces[0][0]}", f"the variable {var} has not been defined in previous steps"
    defined = state.partition.leaves[var]
    try:
        if parse_expr(pieces[0][0]) != parse_expr(defined):
            return f"{var} = {pieces[0][0]}", f"step ({state.partition_label}) defines {var} as {defined}"
    except InvalidExpression:
        return _invalid(pieces[0][0])
    values = _values(pieces, state.values)
    if isinstance(values, tuple):
        return values
    error = _check_pairs(chain, pieces, values, first=0) or _check_finished(pieces)
    if error:
        return error
    state.values[var] = state.last_value = values[-1]
    return None


def _check_combine(match: re.Match[str], state: _State) -> Error | None:
    """TriPosT's order: substituted variables, the substitution, the value vs the question, then the chain."""
    chain = match["chain"]
    pieces = _chain(chain)
    if len(pieces) < 2:
        return _invalid(chain)
    head = chain[pieces[0][1] : pieces[1][2]]
    try:
        missing = [var for var in variables(parse_expr(pieces[0][0])) if var not in state.values]
    except InvalidExpression:
        return _invalid(pieces[0][0])
    if missing:
        return head, f"the value of {missing[0]} has not been calculated in previous steps"
    values = _values(pieces, state.values)
    if isinstance(values, tuple):
        return values
    if values[0] != values[1]:
        return head, "this substitution is inconsistent with the results in the previous steps"
    if values[0] != state.target:
        return pieces[0][0], "this equation is inconsistent with the question statement"
    error = _check_pairs(chain, pieces, values, first=1) or _check_finished(pieces)
    if error:
        return error
    state.combined, state.last_value = True, values[-1]
    return None


def _parse_answer(text: str) -> int | None:
    """``"-7"``, ``"+7"``, ``"-7.0"``, ``"1,234"`` -> int; anything else -> None."""
    match = _INTEGER.fullmatch(text.strip().replace(",", ""))
    return int(match["int"]) if match else None


def _check_final(content: str, state: _State) -> Error | None:
    match = _ANSWER.search(content)
    answer = _parse_answer(match["answer"]) if match else None
    if match is None or answer is None:
        return content, "it does not state a numerical answer"
    segment = content[match.start() :]
    if state.last_value is None:
        return segment, "the answer has not been calculated in previous steps"
    if answer != state.last_value:
        return segment, f"this answer is inconsistent with the result in step ({state.last_label})"
    if answer != state.target:
        if not state.combined:
            return segment, "the final equation has not been calculated in previous steps"
        return segment, "this answer is inconsistent with the question statement"
    return None


def check_step(label: str, line: str, state: _State, question_tree: Expr) -> Error | None:
    """Check one step against what earlier steps established; on success record what it establishes."""
    content = _content(label, line)
    if label == "Final response":
        return _check_final(content, state)
    if content.startswith("This equation can be written as"):
        error = _check_partition(content, label, state, question_tree)
    elif match := _CALCULATE.match(content):
        error = _check_calculate(match, state)
    elif match := _COMBINE.match(content):
        error = _check_combine(match, state)
    else:
        error = _invalid(content)
    if error is None:
        state.last_label = label
    return error


def rationale_steps(attempt: str) -> list[tuple[str, str]]:
    """The attempt's steps up to and including its first ``(Final response)``; anything after it is ignored."""
    steps = split_steps(attempt)
    for i, (label, _) in enumerate(steps):
        if label == "Final response":
            return steps[: i + 1]
    return steps


# --------------------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------------------


def _bucket(length: int, depth: int) -> str:
    return ("l3-4" if length <= 4 else "l5-6") + "d" + "2" * depth


def _random_expression(rng: random.Random, length: int, depth: int) -> str:
    """BIG-bench's shape: a leaf joins ``length`` integers in −9..9 with + − *; each level joins two subtrees."""
    if depth == 0:
        tokens = [str(rng.randint(-9, 9))]
        for _ in range(length - 1):
            tokens += [rng.choice("+-*"), str(rng.randint(-9, 9))]
        return "(" + " ".join(tokens) + ")"
    left, right = _random_expression(rng, length, depth - 1), _random_expression(rng, length, depth - 1)
    return f"({left} {rng.choice('+-*')} {right})"


class MultistepArithmetic(Task):
    """BIG-bench multistep arithmetic with TriPosT's scripted rationales, verifier and improvements.

    Seen combinations (train and seen test): leaf lengths 3–4 with depth levels [2] and [2, 2]; unseen (test
    only): depth [2, 2, 2] with lengths 3–4, and lengths 5–6 with every depth.

    Args:
        num_train: number of training questions, balanced over the 4 seen (length, depth) combinations.
        num_test_per_combo: test questions for each of the 12 (length, depth) combinations (TriPosT: 30).
        num_test_unseen_per_combo: test questions for each of the 8 unseen combinations, if different (their
            rationales are 2-4x longer, so they dominate evaluation time); None: ``num_test_per_combo``.
        seed: generation seed; the same arguments always give the same questions. Train and test are disjoint.
    """

    name = "multistep_arithmetic"
    answer_info = ANSWER_INFO

    def __init__(
        self,
        num_train: int = 600,
        num_test_per_combo: int = 30,
        num_test_unseen_per_combo: int | None = None,
        seed: int = 0,
    ) -> None:
        if num_train < 0 or num_test_per_combo < 0 or (num_test_unseen_per_combo or 0) < 0:
            raise ValueError("num_train, num_test_per_combo and num_test_unseen_per_combo must be >= 0")
        self.num_train, self.num_test_per_combo, self.seed = num_train, num_test_per_combo, seed
        self.num_test_unseen_per_combo = num_test_per_combo if num_test_unseen_per_combo is None else num_test_unseen_per_combo
        self._splits: dict[str, list[Question]] | None = None

    def questions(self, split: str) -> list[Question]:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        if self._splits is None:
            self._splits = self._generate()
        return list(self._splits[split])

    def _generate(self) -> dict[str, list[Question]]:
        taken: set[str] = set()
        test_rng = random.Random(f"{self.name}/test/{self.seed}")  # str seeds are stable across processes
        test = [
            self._unique(test_rng, length, depth, taken)
            for length in LENGTHS
            for depth in DEPTHS
            for _ in range(self.num_test_per_combo if length <= 4 and depth <= 2 else self.num_test_unseen_per_combo)
        ]
        seen = [(length, depth) for length in (3, 4) for depth in (1, 2)]
        train_rng = random.Random(f"{self.name}/train/{self.seed}")
        counts = [self.num_train // len(seen) + (i < self.num_train % len(seen)) for i in range(len(seen))]
        train = [self._unique(train_rng, *combo, taken) for combo, n in zip(seen, counts) for _ in range(n)]
        train_rng.shuffle(train)
        return {
            "train": [self._question(f"ma-train-{i:05d}", *item) for i, item in enumerate(train)],
            "test": [self._question(f"ma-test-{i:05d}", *item) for i, item in enumerate(test)],
        }

    @staticmethod
    def _unique(rng: random.Random, length: int, depth: int, taken: set[str]) -> tuple[str, int, int]:
        while (expression := _random_expression(rng, length, depth)) in taken:
            pass
        taken.add(expression)
        return expression, length, depth

    @staticmethod
    def _question(qid: str, expression: str, length: int, depth: int) -> Question:
        bucket = _bucket(length, depth)
        answer = str(evaluate(parse_expr(expression)))
        return Question(qid, f"{expression} =", answer, bucket, bucket in SEEN_BUCKETS)

    def buckets(self) -> list[str]:
        return list(BUCKETS)

    def gold_rationale(self, question: Question) -> str:
        return solve(question_expression(question))

    def slipped_rationale(self, question: Question, rng: random.Random) -> str:
        """The gold rationale with a calculation slip in its last step, carried into the final response."""
        lines = self.gold_rationale(question).splitlines()
        wrong = str(int(question.answer) + rng.choice([-3, -2, -1, 1, 2, 3]))
        last, final = lines[-2], lines[-1]  # "(n) Then, the final equation is ... = 42." / "(Final response) ... 42."
        lines[-2] = last[: last.rindex("=") + 1] + f" {wrong}."
        lines[-1] = final[: final.rindex(" ") + 1] + f"{wrong}."
        return "\n".join(lines)

    def extract_answer(self, attempt: str) -> str | None:
        for label, line in rationale_steps(attempt):
            if label == "Final response" and (match := _ANSWER.search(line)):
                answer = _parse_answer(match["answer"])
                return None if answer is None else str(answer)
        return None

    def is_correct(self, question: Question, attempt: str) -> bool:
        """Gold answer and TriPosT's ``has_valid_content``: the final number is the previous step's result."""
        answer = self.extract_answer(attempt)
        steps = rationale_steps(attempt)
        if answer != question.answer or len(steps) < 2:
            return False
        last_piece = steps[-2][1].rsplit("=", 1)[-1].strip().removesuffix(".")
        return _parse_answer(last_piece) == int(answer)

    def verify(self, question: Question, attempt: str) -> Feedback:
        steps = rationale_steps(attempt)
        if not steps:
            raise ValueError("the attempt has no numbered steps")
        _, index, error = _walk(question, steps)
        if index is not None and error is not None:
            segment, reason = error
            label = steps[index][0]
            return error_feedback(steps[index - 1][0] if index else None, label, segment or f"({label})", reason)
        if steps[-1][0] != "Final response":
            raise ValueError("the attempt ends without a (Final response) step")
        return Feedback(text=correct_feedback(attempt), correct=True)

    def scripted_improvement(self, question: Question, attempt: str, feedback: Feedback) -> str | Dropped:
        steps = rationale_steps(attempt)
        index = _wrong_index(steps, feedback.step, _walk(question, steps)[1])
        if index is None:
            return Dropped(f"the attempt has no step ({feedback.step})")
        if index == 0:
            return self.gold_rationale(question)
        state, bad, _ = _walk(question, steps[:index])
        if bad is not None:
            return Dropped(f"step ({steps[bad][0]}) before the wrong step is itself wrong")
        if state.partition is None:
            return Dropped(f"no partition step before step ({feedback.step})")
        rest = solve_from(state.partition, index + 1, set(state.values), state.combined)  # kept labels are 1..index
        return "\n".join([line for _, line in steps[:index]] + rest)


def _walk(question: Question, steps: list[tuple[str, str]]) -> tuple[_State, int | None, Error | None]:
    """Check ``steps`` in order: the state they establish, and the index and error of the first wrong one."""
    expression = parse_expr(question_expression(question))
    state = _State(target=evaluate(expression))
    for index, (label, line) in enumerate(steps):
        if error := check_step(label, line, state, expression):
            return state, index, error
        if label != "Final response" and label != str(index + 1):
            return state, index, (f"({label})", f"this step should be numbered ({index + 1})")
    return state, None, None


def _wrong_index(steps: list[tuple[str, str]], label: str | None, first_error: int | None) -> int | None:
    """Index of the step the feedback names; labels can repeat in model output, so prefer the first wrong step."""
    if first_error is not None and steps[first_error][0] == label:
        return first_error
    return next((i for i, (step_label, _) in enumerate(steps) if step_label == label), None)
