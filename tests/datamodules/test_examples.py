from collections import Counter

from datamodules.examples import GOLD, IMPROVEMENT, NON_IMPROVEMENT, Example, rebalance, split_turns
from datamodules.interaction_log import Episode, Turn

PROMPT = "Q: (1 + 2) * 3 =\nAnswer: Let's think step by step. Recall the order.\n"
ATT1 = "(1) 1 + 2 = 4.\n(2) 4 * 3 = 12.\n(Final response) So the answer is 12."
ATT2 = "(1) 1 + 2 = 3.\n(2) 3 * 3 = 6.\n(Final response) So the answer is 6."
ATT3 = "(1) 1 + 2 = 3.\n(2) 3 * 3 = 9.\n(Final response) So the answer is 9."
FB1 = 'In step (1) the part "1 + 2 = 4" is incorrect. This is because 1 + 2 is 3.'
FB2 = 'Step (1) is correct. In step (2) the part "3 * 3 = 6" is incorrect. This is because 3 * 3 is 9.'
OK = "Step (1) to step (2) are correct. The final response is also correct."


def make(outcome, texts):
    roles = ["attempt"] + ["feedback" if i % 2 else "improvement" for i in range(1, len(texts))]
    turns = tuple(Turn(r, t, "script") for r, t in zip(roles, texts))
    return Episode(id="e", task="t", iteration=1, prompt=PROMPT, turns=turns, outcome=outcome)


def test_improved_trajectory_is_cut_into_turns():
    examples = split_turns(make("improved", [ATT1, FB1, ATT2, FB2, ATT3, OK]))
    assert [e.kind for e in examples] == [IMPROVEMENT, IMPROVEMENT, NON_IMPROVEMENT]
    updated = "Updated Answer: Let's think step by step. Recall the order."
    assert examples[0].text == f"{PROMPT}{ATT1}\nFeedback: {FB1}\n{updated}\n{ATT2}"
    assert examples[1].text == f"{PROMPT}{ATT2}\nFeedback: {FB2}\n{updated}\n{ATT3}"
    assert examples[2].text == f"{PROMPT}{ATT3}\nFeedback: {OK}"
    assert all(e.weighted for e in examples)
    assert examples[0].self_improve.startswith("Feedback: ") and examples[0].answer == ATT1 + "\n"
    assert [e.attempt_correct for e in examples] == [False, False, True]  # ATT1, ATT2 wrong; ATT3 accepted


def test_directly_correct_is_unweighted_and_untrainable_outcomes_vanish():
    (example,) = split_turns(make("correct", [ATT3, OK]))
    assert example.kind == NON_IMPROVEMENT and not example.weighted
    assert split_turns(make("failed", [ATT1, FB1])) == []
    assert split_turns(make("dropped", [ATT1])) == []
    (feedback_only,) = split_turns(make("feedback_only", [ATT1, FB1]))
    assert feedback_only.weighted and feedback_only.text.endswith(FB1)
    assert not feedback_only.attempt_correct and example.attempt_correct


def fake(kind, n):
    return [Example(kind, "p", "a", "s", True, f"{kind}{i}") for i in range(n)]


def test_rebalance_counts_follow_r_1_1():
    imp, non, gold = fake(IMPROVEMENT, 10), fake(NON_IMPROVEMENT, 20), fake(GOLD, 30)
    mixed = rebalance(imp, non, gold, ratio=1.5, seed=0)
    assert Counter(e.kind for e in mixed) == {IMPROVEMENT: 10, NON_IMPROVEMENT: 7, GOLD: 7}  # ceil(10 / 1.5) = 7
    assert rebalance(imp, non, gold, ratio=1.5, seed=0) == mixed  # deterministic in the seed
    assert rebalance(imp, non, gold, ratio=1.5, seed=1) != mixed
    # too few non-improvement examples: all of them, and as many gold
    assert Counter(e.kind for e in rebalance(imp, non[:3], gold, 1.5, 0)) == {IMPROVEMENT: 10, NON_IMPROVEMENT: 3, GOLD: 3}
    # r <= 0: no re-balancing, every non-improvement example kept
    assert Counter(e.kind for e in rebalance(imp, non, gold, 0, 0)) == {IMPROVEMENT: 10, NON_IMPROVEMENT: 20, GOLD: 20}
