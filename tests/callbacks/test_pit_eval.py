"""PIT's iterative evaluation: win / lose rates against y_0 from scripted scores; ties count as neither."""

from types import SimpleNamespace

import pytest

from callbacks.pit_eval import IterativeImprovementEval
from datamodules.interaction_log import Episode, Turn

# held-out prompt -> y_0 (the reference), y_1, y_2 and each one's exact score
CHAINS = {
    "x1": [("a0", 0.4), ("a1", 0.6), ("a2", 0.4)],
    "x2": [("b0", 0.6), ("b1", 0.6), ("b2", 0.2)],
    "x3": [("c0", 0.2), ("c1", 0.0), ("c2", 0.2)],
    "x4": [("d0", 0.8), ("d1", 1.0), ("d2", 0.6)],
}
EXACT = {(x, y): s for x, chain in CHAINS.items() for y, s in chain}
NEXT = {(x, chain[i][0]): chain[i + 1][0] for x, chain in CHAINS.items() for i in range(2)}  # y_{i-1} -> y_i
# the judge's gap R(x, y_0, y): "no change" levels R(x, y_0, y_0), then y_1's and y_2's
GAP = {("x1", "a0"): 0.0, ("x1", "a1"): 0.5, ("x1", "a2"): 0.0,
       ("x2", "b0"): 0.1, ("x2", "b1"): 0.1, ("x2", "b2"): 0.3,
       ("x3", "c0"): -0.2, ("x3", "c1"): -0.3, ("x3", "c2"): -0.1,
       ("x4", "d0"): 0.0, ("x4", "d1"): 0.2, ("x4", "d2"): 0.2}


class Policy:
    def improve(self, pairs, temperature):
        return [NEXT[(x, y)] for x, y in pairs]  # KeyError unless fed its own previous output


class Judge:
    def score(self, triples):
        assert all(y_ref == CHAINS[x][0][0] for x, y_ref, _ in triples)  # always against y_0
        return [GAP[(x, y)] for x, _, y in triples]


class HeldOut:
    def __init__(self):
        episodes = [Episode(id=x, task="toy", iteration=0, prompt=x, outcome="improved",
                            turns=(Turn("reference", chain[0][0], "dataset"), Turn("response", "unused", "dataset")))
                    for x, chain in CHAINS.items()]
        self.preferences = SimpleNamespace(score=lambda x, y: EXACT[(x, y)])
        self.split = lambda fold: ([], episodes) if fold == "rm" else None


def test_win_and_lose_rates_against_the_reference_by_hand():
    metrics = IterativeImprovementEval(Judge(), iterations=2, num_prompts=10).evaluate(Policy(), HeldOut())
    # iteration 1 vs y_0: x1 .6 > .4 win, x2 .6 = .6 tie, x3 0 < .2 lose, x4 1 > .8 win -> win 2/4, lose 1/4
    # iteration 2 vs y_0 (not vs y_1): x1 .4 = .4 tie, x2 .2 < .6 lose, x3 .2 = .2 tie, x4 .6 < .8 lose -> 0/4, 2/4
    assert metrics["exact_win_rate"] == pytest.approx([0.0, 0.5, 0.0])
    assert metrics["exact_lose_rate"] == pytest.approx([0.0, 0.25, 0.5])
    delta = [w - l for w, l in zip(metrics["exact_win_rate"], metrics["exact_lose_rate"])]
    assert delta == pytest.approx([0.0, 0.25, -0.5])  # Δ = win - lose; ties count in neither
    # mean exact score: y_0 (.4 + .6 + .2 + .8) / 4 = .5, y_1 (.6 + .6 + 0 + 1) / 4 = .55,
    # y_2 (.4 + .2 + .2 + .6) / 4 = .35
    assert metrics["exact_score"] == pytest.approx([0.5, 0.55, 0.35])
    # judge: y_i wins when R(x, y_0, y_i) > R(x, y_0, y_0)
    # iteration 1: x1 .5 > 0 win, x2 .1 = .1 tie, x3 -.3 < -.2, x4 .2 > 0 win -> 2/4
    # iteration 2: x1 0 = 0 tie, x2 .3 > .1 win, x3 -.1 > -.2 win, x4 .2 > 0 win -> 3/4
    assert metrics["rm_win_rate"] == pytest.approx([0.0, 0.5, 0.75])


def test_only_the_first_num_prompts_are_evaluated():
    metrics = IterativeImprovementEval(None, iterations=1, num_prompts=2).evaluate(Policy(), HeldOut())
    # x1 win, x2 tie -> win 1/2, lose 0/2; no judge, no rm_win_rate
    assert set(metrics) == {"exact_score", "exact_win_rate", "exact_lose_rate"}
    assert metrics["exact_win_rate"] == [0.0, 0.5] and metrics["exact_lose_rate"] == [0.0, 0.0]
    assert metrics["exact_score"] == pytest.approx([0.5, 0.6])  # (.4 + .6) / 2, (.6 + .6) / 2
