import pytest

from feedback.base import Dropped, Teacher, error_feedback
from feedback.editing import check_improvement, edit_traces
from feedback.scripted import ScriptedTeacher
from tasks.base import Question, correct_feedback

GOLD = """(1) This equation can be written as "(A - B)", where A = (-6 * -3 * -5) and B = (2 + 4 - 1).
(2) Let's calculate A = (-6 * -3 * -5) = ((-6 * -3) * -5) = (18 * -5) = -90.
(3) Let's calculate B = (2 + 4 - 1) = ((2 + 4) - 1) = (6 - 1) = 5.
(4) Then, the final equation is (A - B) = (-90 - 5) = -95.
(Final response) So the answer is -95."""
# step (2) multiplies wrongly and the error carries through to the answer
WRONG = """(1) This equation can be written as "(A - B)", where A = (-6 * -3 * -5) and B = (2 + 4 - 1).
(2) Let's calculate A = (-6 * -3 * -5) = ((-6 * -3) * -5) = (18 * -5) = -80.
(3) Let's calculate B = (2 + 4 - 1) = ((2 + 4) - 1) = (6 - 1) = 5.
(4) Then, the final equation is (A - B) = (-80 - 5) = -85.
(Final response) So the answer is -85."""


@pytest.fixture(scope="module")
def setup(ma_task):
    question = Question("hand-1", "((-6 * -3 * -5) - (2 + 4 - 1)) =", "-95", "l3-4d2", True)
    assert ma_task.gold_rationale(question) == GOLD
    return ma_task, question, GOLD, WRONG


def edit(task, question, attempts, feedbacks, teacher=None, max_updates=5):
    (episode,) = edit_traces(task, teacher or ScriptedTeacher(), [question], [(attempts, feedbacks)], iteration=1,
                             prompts=[task.prompt(question)], max_updates=max_updates)
    return episode


def test_correct_attempt_gets_the_fixed_feedback(setup):
    task, question, gold, _ = setup
    episode = edit(task, question, [gold], [None])
    assert episode.outcome == "correct"
    assert [(t.role, t.by) for t in episode.turns] == [("attempt", "policy"), ("feedback", "gold")]
    assert episode.turns[1].text == correct_feedback(gold)


def test_wrong_attempt_is_fixed_from_the_wrong_step(setup):
    task, question, gold, wrong = setup
    episode = edit(task, question, [wrong], [None])
    assert episode.outcome == "improved", episode.reason
    roles = [t.role for t in episode.turns]
    assert roles == ["attempt", "feedback", "improvement", "feedback"]
    assert 'In step (2) the part "(18 * -5) = -80" is incorrect' in episode.turns[1].text
    assert episode.turns[1].by == "script"
    improved = episode.turns[2].text
    assert improved.split("\n")[0] == wrong.split("\n")[0]  # verified-correct prefix kept verbatim
    assert task.is_correct(question, improved)
    assert episode.turns[3].text == correct_feedback(improved)


def test_policy_that_fixed_itself_keeps_its_whole_trajectory(setup):
    task, question, gold, wrong = setup
    own = ScriptedTeacher().feedback(task, [(question, wrong)])[0].text  # the policy's own, correct, feedback
    episode = edit(task, question, [wrong, gold], [own, correct_feedback(gold)])
    assert episode.outcome == "improved"
    assert [(t.role, t.by) for t in episode.turns] == [
        ("attempt", "policy"), ("feedback", "policy"), ("improvement", "policy"), ("feedback", "gold")]


def test_own_feedback_that_misses_the_error_is_replaced(setup):
    task, question, gold, wrong = setup
    episode = edit(task, question, [wrong], [correct_feedback(wrong)])  # the policy claims its wrong answer is right
    assert episode.outcome == "improved"
    assert episode.turns[1].by == "script" and "is incorrect" in episode.turns[1].text


def test_unusable_attempts_are_dropped_with_a_reason(setup):
    task, question, _, _ = setup
    empty = edit(task, question, [""], [None])
    assert (empty.outcome, empty.reason, [t.role for t in empty.turns]) == ("dropped", "empty attempt", ["attempt"])
    garbage = edit(task, question, ["the answer is probably 3"], [None])
    assert garbage.outcome == "dropped" and garbage.reason.startswith("teacher feedback:")


class RewritesEverything(Teacher):
    """A bad teacher: its improvement also rewrites the verified-correct first step."""

    name = "bad"

    def __init__(self, good):
        self.good = good

    def feedback(self, task, items):
        return ScriptedTeacher().feedback(task, items)

    def improve(self, task, items):
        return ["(1) something else.\n" + "\n".join(self.good.split("\n")[1:]) for _ in items]


class NeverAnswers(RewritesEverything):
    def improve(self, task, items):
        return [Dropped("endpoint returned nothing") for _ in items]


def test_illegitimate_or_missing_improvements_fail_the_episode(setup):
    task, question, gold, wrong = setup
    episode = edit(task, question, [wrong], [None], teacher=RewritesEverything(gold))
    assert episode.outcome == "failed" and "changed the steps before step (2)" in episode.reason
    episode = edit(task, question, [wrong], [None], teacher=NeverAnswers(gold))
    assert episode.outcome == "failed" and "endpoint returned nothing" in episode.reason


class Replays(Teacher):
    """A teacher that says what the test wrote: improvements in order, feedback from the script unless the test
    scripted it (None: ask the script). Counts its improvement calls."""

    name = "replay"

    def __init__(self, improvements, feedbacks=()):
        self.improvements, self.feedbacks, self.improve_calls = list(improvements), list(feedbacks), 0

    def feedback(self, task, items):
        answers = [self.feedbacks.pop(0) if self.feedbacks else None for _ in items]
        return [a or ScriptedTeacher().feedback(task, [item])[0] for a, item in zip(answers, items)]

    def improve(self, task, items):
        self.improve_calls += len(items)
        return [self.improvements.pop(0) if self.improvements else Dropped("nothing left to replay") for _ in items]


def test_an_improvement_that_makes_no_progress_leaves_a_feedback_only_episode(setup):
    task, question, gold, wrong = setup
    lines = gold.splitlines()
    # step (2) fixed, step (4) newly wrong: then the teacher blames step (1), before the step (2) it blamed first
    improvement = "\n".join([*lines[:3], "(4) Then, the final equation is (A - B) = (-90 - 5) = -85.",
                             "(Final response) So the answer is -85."])
    step1 = error_feedback(None, "1", "(A - B)", "x")
    teacher = Replays([improvement, gold], feedbacks=[None, step1])
    episode = edit(task, question, [wrong], [None], teacher=teacher)
    assert (episode.outcome, episode.reason) == ("feedback_only", "improvement made no progress")
    # the improvement and its feedback are not kept: the attempt and the teacher's first feedback only
    assert [(t.role, t.by) for t in episode.turns] == [("attempt", "policy"), ("feedback", "replay")]
    assert episode.turns[0].text == wrong
    assert episode.turns[1].text.startswith('Step (1) is correct. In step (2) the part "(18 * -5) = -80" is incorrect')
    assert teacher.improve_calls == 1  # the episode ended: gold was never asked for


def test_improvements_stop_after_max_updates(setup):
    task, question, gold, wrong = setup
    lines = gold.splitlines()
    # each improvement fixes the step blamed and slips on a later one: step (2) -> (3) -> (4), always progress
    fixes_2 = "\n".join([*lines[:2], "(3) Let's calculate B = (2 + 4 - 1) = ((2 + 4) - 1) = (6 - 1) = 4.",
                         "(4) Then, the final equation is (A - B) = (-90 - 4) = -86.",
                         "(Final response) So the answer is -86."])
    fixes_3 = "\n".join([*lines[:3], "(4) Then, the final equation is (A - B) = (-90 - 5) = -85.",
                         "(Final response) So the answer is -85."])
    teacher = Replays([fixes_2, fixes_3, gold])  # a third improvement would be right, but max_updates=2 forbids it
    episode = edit(task, question, [wrong], [None], teacher=teacher, max_updates=2)
    assert (episode.outcome, episode.reason) == ("failed", "not correct after max_updates=2 improvements")
    assert [(t.role, t.by) for t in episode.turns] == [
        ("attempt", "policy"), ("feedback", "replay"), ("improvement", "replay"), ("feedback", "replay"),
        ("improvement", "replay"), ("feedback", "replay")]
    assert [t.text for t in episode.turns[2::2]] == [fixes_2, fixes_3]
    assert 'In step (3) the part "(6 - 1) = 4" is incorrect' in episode.turns[3].text
    assert 'In step (4) the part "(-90 - 5) = -85" is incorrect' in episode.turns[5].text
    assert teacher.improve_calls == 2


def test_check_improvement_rules(setup):
    _, _, gold, wrong = setup
    feedback = ScriptedTeacher().feedback(setup[0], [(setup[1], wrong)])[0]
    assert check_improvement(wrong, gold, feedback) is None
    assert "identical" in check_improvement(wrong, wrong, feedback)
    assert "(Final response)" in check_improvement(wrong, "\n".join(gold.split("\n")[:-1]), feedback)
