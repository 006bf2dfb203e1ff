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


def no_progress_improvements(gold):
    """An improvement that fixes step (2) but slips on step (4), the teacher's (wrong) feedback on it blaming step
    (1), before the step (2) it blamed first (no progress), and a rewrite of step (1) as that feedback asks."""
    lines = gold.splitlines()
    slips_4 = "\n".join([*lines[:3], "(4) Then, the final equation is (A - B) = (-90 - 5) = -85.",
                         "(Final response) So the answer is -85."])
    blames_1 = error_feedback(None, "1", "(A - B)", "the two parts should be named differently")
    rewrites_1 = lines[0].replace('"(A - B)"', '"A - B"')
    return slips_4, blames_1, rewrites_1


def progressing_improvements(gold):
    """Improvements that each fix the step blamed and slip on a later one: step (2) -> (3) -> (4)."""
    lines = gold.splitlines()
    fixes_2 = "\n".join([*lines[:2], "(3) Let's calculate B = (2 + 4 - 1) = ((2 + 4) - 1) = (6 - 1) = 4.",
                         "(4) Then, the final equation is (A - B) = (-90 - 4) = -86.",
                         "(Final response) So the answer is -86."])
    fixes_3 = "\n".join([*lines[:3], "(4) Then, the final equation is (A - B) = (-90 - 5) = -85.",
                         "(Final response) So the answer is -85."])
    return fixes_2, fixes_3


def test_no_progress_then_correct_keeps_only_the_first_feedback(setup):
    task, question, gold, wrong = setup
    slips_4, blames_1, rewrites_1 = no_progress_improvements(gold)
    correct = "\n".join([rewrites_1, *gold.splitlines()[1:]])
    teacher = Replays([slips_4, correct], feedbacks=[None, blames_1])
    episode = edit(task, question, [wrong], [None], teacher=teacher)
    # the reference's bad_improvement: improving goes on until correct, then only [attempt, first feedback] is kept
    assert teacher.improve_calls == 2
    assert (episode.outcome, episode.reason) == (
        "feedback_only", "an improvement made no progress: kept the first feedback only")
    assert [(t.role, t.by) for t in episode.turns] == [("attempt", "policy"), ("feedback", "replay")]
    assert episode.turns[0].text == wrong
    assert episode.turns[1].text.startswith('Step (1) is correct. In step (2) the part "(18 * -5) = -80" is incorrect')


def test_no_progress_then_never_correct_fails(setup):
    task, question, gold, wrong = setup
    slips_4, blames_1, rewrites_1 = no_progress_improvements(gold)
    still_slips_4 = "\n".join([rewrites_1, *slips_4.splitlines()[1:]])
    teacher = Replays([slips_4, still_slips_4, gold], feedbacks=[None, blames_1])
    episode = edit(task, question, [wrong], [None], teacher=teacher, max_updates=2)
    assert teacher.improve_calls == 2
    assert (episode.outcome, episode.reason) == (
        "failed", "not correct after max_updates=2 improvements (an improvement made no progress)")
    # failed episodes are not trained on; the log keeps every turn to show what happened
    assert [(t.role, t.by) for t in episode.turns] == [
        ("attempt", "policy"), ("feedback", "replay"), ("improvement", "replay"), ("feedback", "replay"),
        ("improvement", "replay"), ("feedback", "replay")]
    assert [t.text for t in episode.turns[2::2]] == [slips_4, still_slips_4]
    assert episode.turns[3].text == blames_1.text


def test_no_progress_keeps_the_policy_turns_before_the_edit_point(setup):
    task, question, gold, wrong = setup
    fixes_2, _ = progressing_improvements(gold)
    slips_4, blames_1, rewrites_1 = no_progress_improvements(gold)
    own = ScriptedTeacher().feedback(task, [(question, wrong)])[0].text  # right: the policy then fixes step (2)
    correct = "\n".join([rewrites_1, *gold.splitlines()[1:]])
    teacher = Replays([slips_4, correct], feedbacks=[None, None, blames_1])
    episode = edit(task, question, [wrong, fixes_2], [own, None], teacher=teacher)
    # the reference merges the policy's agreeing turns with [attempt, first feedback] at the edit point
    assert episode.outcome == "feedback_only"
    assert [(t.role, t.by) for t in episode.turns] == [
        ("attempt", "policy"), ("feedback", "policy"), ("improvement", "policy"), ("feedback", "replay")]
    assert [t.text for t in episode.turns[0::2]] == [wrong, fixes_2]
    assert 'In step (3) the part "(6 - 1) = 4" is incorrect' in episode.turns[3].text


def test_progressing_improvements_keep_every_turn(setup):
    task, question, gold, wrong = setup
    fixes_2, fixes_3 = progressing_improvements(gold)
    teacher = Replays([fixes_2, fixes_3, gold])
    episode = edit(task, question, [wrong], [None], teacher=teacher, max_updates=3)
    assert (episode.outcome, episode.reason) == ("improved", None)
    assert [(t.role, t.by) for t in episode.turns] == [
        ("attempt", "policy"), ("feedback", "replay"), ("improvement", "replay"), ("feedback", "replay"),
        ("improvement", "replay"), ("feedback", "replay"), ("improvement", "replay"), ("feedback", "gold")]
    assert [t.text for t in episode.turns[0::2]] == [wrong, fixes_2, fixes_3, gold]
    assert episode.turns[7].text == correct_feedback(gold)


def test_improvements_stop_after_max_updates(setup):
    task, question, gold, wrong = setup
    fixes_2, fixes_3 = progressing_improvements(gold)
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


def test_no_teacher_answer_drops_the_episode_and_an_unusable_one_fails_it(setup):
    task, question, gold, wrong = setup
    fixes_2, _ = progressing_improvements(gold)
    dead = Dropped("teacher unavailable after 7 tries: HTTP 503", unavailable=True)
    # the first feedback (on the attempt) from the script, the second (on the improvement) never arrives
    episode = edit(task, question, [wrong], [None], teacher=Replays([fixes_2], feedbacks=[None, dead]))
    assert (episode.outcome, episode.reason) == ("dropped", "teacher feedback: teacher unavailable after 7 tries: HTTP 503")
    off_format = Dropped("off-format feedback: expected '(k)'")  # an answer, but unusable: the improvement failed
    episode = edit(task, question, [wrong], [None], teacher=Replays([fixes_2], feedbacks=[None, off_format]))
    assert (episode.outcome, episode.reason) == ("failed", "teacher feedback: off-format feedback: expected '(k)'")


def test_check_improvement_rules(setup):
    _, _, gold, wrong = setup
    feedback = ScriptedTeacher().feedback(setup[0], [(setup[1], wrong)])[0]
    assert check_improvement(wrong, gold, feedback) is None
    assert "identical" in check_improvement(wrong, wrong, feedback)
    assert "(Final response)" in check_improvement(wrong, "\n".join(gold.split("\n")[:-1]), feedback)


# Step-numbering slips: the step is right but mislabelled, and the answer is wrong further on. The task's verifier
# blames the label itself (the part "(4)"), so the improvement renumbers that step rather than changing its text.
RENUMBERED_B = [
    ("(3) Let's", "(4) Let's"),  # the label of a later step: (1) (2) (4) (4)
    ("(3) Let's", "(2) Let's"),  # the label of an earlier step: (1) (2) (2) (4)
]


def numbering_slip(gold, relabel):
    """``gold`` with step (3) relabelled and a wrong subtraction in step (4), carried into the answer."""
    return gold.replace(*relabel).replace("(-90 - 5) = -95.", "(-90 - 5) = -85.").replace("is -95.", "is -85.")


@pytest.mark.parametrize("relabel", RENUMBERED_B, ids=["later-label", "earlier-label"])
def test_a_fix_of_a_numbering_error_improves_the_episode(setup, relabel):
    task, question, gold, _ = setup
    slip = numbering_slip(gold, relabel)
    label = relabel[1][:3]
    episode = edit(task, question, [slip], [None])
    assert (episode.outcome, episode.reason) == ("improved", None)
    assert [(t.role, t.by) for t in episode.turns] == [
        ("attempt", "policy"), ("feedback", "script"), ("improvement", "script"), ("feedback", "gold")]
    assert episode.turns[1].text == (f'Step (1) to step (2) are correct. In step {label} the part "{label}" is '
                                     "incorrect. This is because this step should be numbered (3).")
    assert episode.turns[2].text == gold


@pytest.mark.parametrize("relabel", RENUMBERED_B, ids=["later-label", "earlier-label"])
def test_an_improvement_that_keeps_a_wrong_number_is_rejected(setup, relabel):
    task, question, gold, _ = setup
    slip = numbering_slip(gold, relabel)
    label = relabel[1][:3]
    # step (3) reworded and the answer fixed, but the step still carries the wrong number
    keeps_label = gold.replace("(3) Let's calculate B = (2 + 4 - 1) = ((2 + 4) - 1)",
                               f"{label} Let's calculate B = (2 + 4 - 1)")
    feedback = ScriptedTeacher().feedback(task, [(question, slip)])[0]
    assert check_improvement(slip, keeps_label, feedback) == f"step {label} still contains the wrong part '{label}'"
    episode = edit(task, question, [slip], [None], teacher=Replays([keeps_label]))
    assert (episode.outcome, episode.reason) == (
        "failed", f"improvement rejected: step {label} still contains the wrong part '{label}'")
    assert check_improvement(slip, gold, feedback) is None


def test_progress_after_a_numbering_fix_is_judged_by_position(setup):
    task, question, gold, _ = setup
    slip = numbering_slip(gold, RENUMBERED_B[0])  # step (4) at the place of step (3)
    lines = gold.splitlines()
    # renumbered (4) -> (3) but B miscalculated: a new error in the same place, a different part: progress
    renumbered = "\n".join([*lines[:2], "(3) Let's calculate B = (2 + 4 - 1) = ((2 + 4) - 1) = (6 - 1) = 4.",
                            "(4) Then, the final equation is (A - B) = (-90 - 4) = -86.",
                            "(Final response) So the answer is -86."])
    teacher = Replays([renumbered, gold])
    episode = edit(task, question, [slip], [None], teacher=teacher)
    assert (episode.outcome, episode.reason) == ("improved", None)
    assert [t.text for t in episode.turns[0::2]] == [slip, renumbered, gold]
    assert 'In step (3) the part "(6 - 1) = 4" is incorrect' in episode.turns[3].text


@pytest.fixture(scope="module")
def ws_task():
    from tasks import WordSorting

    return WordSorting(num_train=1, num_test_seen=0, num_test_unseen=0)


@pytest.mark.parametrize(("relabel", "previous", "should_be"), [
    (("(4) Hence", "(3) Hence"), "3.2", "4"),  # the closing "Hence" numbered as the subpart it follows
    # the right number of the step, (2), and the wrong one, (1), also appear inside it as letter numbers
    (("(2) We now have", "(1) We now have"), "1", "2"),
], ids=["nested-label", "label-quoted-in-the-step"])
def test_a_fix_of_a_word_sorting_numbering_error_improves_the_episode(ws_task, relabel, previous, should_be):
    words = "exclamation altruism elysian buxom metro gradual neophyte"
    answer = "altruism buxom elysian exclamation gradual metro neophyte"
    question = Question("hand-ws", f"Sort the following words alphabetically:\nList: {words}", answer, "4-7", True)
    gold = ws_task.gold_rationale(question)
    assert [line[:6] for line in gold.splitlines()] == [
        "(1) Th", "(2) We", "(3) No", "(3.1) ", "(3.2) ", "(4) He", "(Final"]
    assert '(2) We now have: (1) "altruism" < (2) "buxom"' in gold
    # the step mislabelled, then two words swapped in the answer
    slip = gold.replace(*relabel).replace(f"is: {answer}", "is: altruism buxom exclamation elysian gradual metro neophyte")
    episode = edit(ws_task, question, [slip], [None])
    assert (episode.outcome, episode.reason) == ("improved", None)
    label = relabel[1][:3]
    head = "Step (1) is correct." if previous == "1" else f"Step (1) to step ({previous}) are correct."
    assert episode.turns[1].text == (f'{head} In step {label} the part "{label}" is incorrect. '
                                     f"This is because this step should be numbered ({should_be}).")
    assert episode.turns[2].text == gold
