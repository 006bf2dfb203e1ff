"""PIT's iterative evaluation from scripted policies, judges and exact scores, every number counted by hand: win /
lose rates and Δ against y_0 (ties count as neither), y_0 from the original policy's file shared by every arm and
sampled once when absent, the judges' usage per evaluation, and early stopping keeping the best epoch's weights."""

import json
from types import SimpleNamespace

import pytest
import torch

from callbacks.pit_eval import IterativeImprovementEval
from datamodules.interaction_log import Episode, Turn, read_shard, write_shard

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
    def __init__(self, next_=NEXT):
        self.next, self.calls = next_, []

    def improve(self, pairs, temperature):
        self.calls.append(list(pairs))
        return [self.next[(x, y)] for x, y in pairs]  # KeyError unless fed its own previous output


class Judge:
    def __init__(self, gaps=GAP):
        self.gaps, self.resets, self.off_format = gaps, 0, 0

    def score(self, triples):
        self.off_format += 1  # one "unparseable answer" per call, to see the usage counted per evaluation
        return [self.gaps[(x, y)] for x, _, y in triples]

    def usage(self):
        return {"judge_off_format": float(self.off_format)}

    def reset_usage(self):
        self.resets, self.off_format = self.resets + 1, 0


def episode(x, y_l):
    return Episode(id=x, task="toy", iteration=0, prompt=x, outcome="improved",
                   turns=(Turn("reference", y_l, "dataset"), Turn("response", "unused", "dataset")))


class HeldOut:
    """The reward-model fold's validation share (``split("rm")[1]``) and the exact score."""

    def __init__(self, rejected=None, exact=EXACT):
        rejected = rejected or {x: chain[0][0] for x, chain in CHAINS.items()}
        episodes = [episode(x, y_l) for x, y_l in rejected.items()]
        self.preferences = SimpleNamespace(score=lambda x, y: exact[(x, y)])
        self.split = lambda fold: ([], episodes) if fold == "rm" else None


class Logger:
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step):
        self.logged.append(metrics)


def trainer_for(datamodule, log_dir):
    """What the callback uses of a single-process Trainer."""
    return SimpleNamespace(datamodule=datamodule, log_dir=str(log_dir), is_global_zero=True, global_rank=0,
                           current_epoch=0, global_step=0, should_stop=False, logger=Logger(),
                           strategy=SimpleNamespace(broadcast=lambda value: value, barrier=lambda name=None: None))


def test_win_and_lose_rates_against_the_reference_by_hand():
    metrics = IterativeImprovementEval(Judge(), iterations=2, num_prompts=10).evaluate(Policy(), HeldOut())
    # iteration 1 vs y_0: x1 .6 > .4 win, x2 .6 = .6 tie, x3 0 < .2 lose, x4 1 > .8 win -> win 2/4, lose 1/4
    # iteration 2 vs y_0 (not vs y_1): x1 .4 = .4 tie, x2 .2 < .6 lose, x3 .2 = .2 tie, x4 .6 < .8 lose -> 0/4, 2/4
    assert metrics["exact_win_rate"] == pytest.approx([0.0, 0.5, 0.0])
    assert metrics["exact_lose_rate"] == pytest.approx([0.0, 0.25, 0.5])
    assert metrics["exact_delta"] == pytest.approx([0.0, 0.25, -0.5])  # Δ = win - lose; ties count in neither
    # mean exact score: y_0 (.4 + .6 + .2 + .8) / 4 = .5, y_1 (.6 + .6 + 0 + 1) / 4 = .55,
    # y_2 (.4 + .2 + .2 + .6) / 4 = .35
    assert metrics["exact_score"] == pytest.approx([0.5, 0.55, 0.35])
    # judge: y_i wins when R(x, y_0, y_i) > R(x, y_0, y_0)
    # iteration 1: x1 .5 > 0 win, x2 .1 = .1 tie, x3 -.3 < -.2, x4 .2 > 0 win -> 2/4
    # iteration 2: x1 0 = 0 tie, x2 .3 > .1 win, x3 -.1 > -.2 win, x4 .2 > 0 win -> 3/4
    assert metrics["rm_win_rate"] == pytest.approx([0.0, 0.5, 0.75])  # the trained-against judge
    assert "independent_rm_win_rate" not in metrics


def test_only_the_first_num_prompts_are_evaluated():
    metrics = IterativeImprovementEval(None, iterations=1, num_prompts=2).evaluate(Policy(), HeldOut())
    # x1 win, x2 tie -> win 1/2, lose 0/2, Δ 1/2; no judge, no RM win rate
    assert set(metrics) == {"exact_score", "exact_win_rate", "exact_lose_rate", "exact_delta"}
    assert metrics["exact_win_rate"] == [0.0, 0.5] and metrics["exact_lose_rate"] == [0.0, 0.0]
    assert metrics["exact_delta"] == [0.0, 0.5]
    assert metrics["exact_score"] == pytest.approx([0.5, 0.6])  # (.4 + .6) / 2, (.6 + .6) / 2


# ---- y_0 = samples of the original policy, from one file ----------------------------------------------------------

# three held-out prompts: the dataset's rejected y_l = l*, the original policy's y_0 = p*
REJECTED = {"x1": "l1", "x2": "l2", "x3": "l3"}
Y0 = {"x1": "p1", "x2": "p2", "x3": "p3"}
SCORES = {("x1", "p1"): 0.4, ("x2", "p2"): 0.6, ("x3", "p3"): 0.2,  # y_0: mean .4
          ("x1", "a1"): 0.6, ("x2", "a2"): 0.8, ("x3", "a3"): 0.0,  # arm A's y_1: mean 1.4 / 3
          ("x1", "A1"): 0.4, ("x2", "A2"): 0.2, ("x3", "A3"): 0.0,  # arm A's y_2: mean .2
          **{(x, y_l): 0.2 for x, y_l in REJECTED.items()},  # y_l
          ("x1", "d1"): 0.6, ("x2", "d2"): 0.2, ("x3", "d3"): 0.0}  # arm A's improvements of y_l (kept at i=2)
ARM_A = {("x1", "p1"): "a1", ("x2", "p2"): "a2", ("x3", "p3"): "a3", ("x1", "a1"): "A1", ("x2", "a2"): "A2",
         ("x3", "a3"): "A3", ("x1", "l1"): "d1", ("x2", "l2"): "d2", ("x3", "l3"): "d3",
         ("x1", "d1"): "d1", ("x2", "d2"): "d2", ("x3", "d3"): "d3"}
ARM_B = {(x, y): y for x, y in [*Y0.items(), *REJECTED.items()]}  # copies its reference: all ties
# the independent judge's R(x, y_0, y): 0 for "no change" (y = y_0), then arm A's answers
INDEPENDENT = {**{(x, y): 0.0 for x, y in [*Y0.items(), *REJECTED.items()]},
               ("x1", "a1"): 0.3, ("x2", "a2"): -0.1, ("x3", "a3"): 0.2, ("x1", "A1"): 0.0, ("x2", "A2"): 0.1,
               ("x3", "A3"): -0.5, ("x1", "d1"): 0.1, ("x2", "d2"): 0.1, ("x3", "d3"): 0.1}


def y0_shard(path, y0=Y0):
    write_shard(path, [Episode(id=x, task="toy", iteration=0, prompt=x, outcome="correct",
                               turns=(Turn("reference", y, "original_policy"),)) for x, y in y0.items()])


def test_every_arm_improves_the_same_y0_read_from_the_file(tmp_path, monkeypatch):
    y0_shard(tmp_path / "y0.jsonl")
    monkeypatch.setattr(IterativeImprovementEval, "load_original_policy",
                        lambda self, module: pytest.fail("the file exists: nothing is sampled"))
    data = HeldOut(REJECTED, SCORES)
    results = {}
    for arm, mapping in (("A", ARM_A), ("B", ARM_B)):
        callback = IterativeImprovementEval(independent_judge=Judge(INDEPENDENT), iterations=2, num_prompts=10,
                                            original_policy="unused", y0_path=str(tmp_path / "y0.jsonl"))
        policy, trainer = Policy(mapping), trainer_for(data, tmp_path / arm)
        callback.on_train_epoch_end(trainer, policy)
        assert policy.calls[0] == [("x1", "p1"), ("x2", "p2"), ("x3", "p3")]  # y_0 from the file, for both arms
        assert policy.calls[2] == [("x1", "l1"), ("x2", "l2"), ("x3", "l3")]  # then the second table's y_l
        results[arm] = json.loads((tmp_path / arm / "pit_eval.json").read_text())
    a, b = results["A"], results["B"]
    assert a["y0"] == "original_policy" and a["epoch"] == 0
    # arm A vs y_0 (.4, .6, .2): i=1 (.6, .8, 0): win, win, lose -> win 2/3, lose 1/3, Δ 1/3
    #                            i=2 (.4, .2, 0): tie, lose, lose -> win 0, lose 2/3, Δ -2/3
    assert a["exact_win_rate"] == pytest.approx([0, 2 / 3, 0])
    assert a["exact_lose_rate"] == pytest.approx([0, 1 / 3, 2 / 3])
    assert a["exact_delta"] == pytest.approx([0, 1 / 3, -2 / 3])
    assert a["exact_score"] == pytest.approx([0.4, 1.4 / 3, 0.2])
    # independent judge: i=1 .3, -.1, .2 vs 0 -> 2/3; i=2 0 (a tie), .1, -.5 -> 1/3
    assert a["independent_rm_win_rate"] == pytest.approx([0, 2 / 3, 1 / 3])
    # second table, y_0 = y_l (.2 each): both iterations .6, .2, 0 -> win, tie, lose; judge .1 > 0 for all three
    assert a["dataset/exact_delta"] == pytest.approx([0, 0, 0])
    assert a["dataset/exact_win_rate"] == pytest.approx([0, 1 / 3, 1 / 3])
    assert a["dataset/exact_score"] == pytest.approx([0.2, 0.8 / 3, 0.8 / 3])
    assert a["dataset/independent_rm_win_rate"] == pytest.approx([0, 1, 1])
    # arm B copies y_0: every comparison a tie
    assert b["exact_delta"] == b["exact_win_rate"] == b["exact_lose_rate"] == [0, 0, 0]
    assert b["exact_score"] == pytest.approx([0.4, 0.4, 0.4]) and b["independent_rm_win_rate"] == [0, 0, 0]


def test_y0_is_sampled_once_from_the_original_policy_and_then_reused(tmp_path, monkeypatch):
    loaded, prompts = [], []
    monkeypatch.setattr(IterativeImprovementEval, "load_original_policy",
                        lambda self, module: loaded.append(self.original_policy) or "M_P")

    class Module(Policy):
        def respond(self, texts, temperature, model, progress=None):
            assert model == "M_P" and temperature == 0.7
            prompts.append(list(texts))
            return [(" " + Y0.get(t.strip(), "m0") + " ", True) for t in texts]  # stripped before it is written

    data = HeldOut({**REJECTED, "m1": "lm"}, SCORES | {("m1", "m0"): 0.0, ("m1", "lm"): 0.0})
    path = tmp_path / "y0.jsonl"
    first = IterativeImprovementEval(iterations=1, original_policy="runs/policy/hf_model", y0_path=str(path),
                                     y0_temperature=0.7, dataset_table=False, monitor_prompts=1)
    first.on_train_epoch_end(trainer_for(data, tmp_path / "sft"), Module(ARM_A))
    assert loaded == ["runs/policy/hf_model"]
    assert prompts == [["x1\n", "x2\n", "x3\n", "m1\n"]]  # the plain policy's prompts: reported, then monitor
    assert {e.id: e.turns[0].text for e in read_shard(path)} == {**Y0, "m1": "m0"}
    assert {e.turns[0].by for e in read_shard(path)} == {"original_policy"}
    second = IterativeImprovementEval(iterations=1, original_policy="runs/policy/hf_model", y0_path=str(path),
                                      dataset_table=False, monitor_prompts=1)
    arm = Module(ARM_A)
    second.on_train_epoch_end(trainer_for(data, tmp_path / "rl"), arm)
    assert loaded == ["runs/policy/hf_model"] and len(prompts) == 1  # read back, not sampled again
    assert arm.calls == [[("x1", "p1"), ("x2", "p2"), ("x3", "p3")]]  # the monitor prompt is not reported

    other = IterativeImprovementEval(iterations=1, y0_path=str(path), monitor_prompts=0)
    data_without_m1 = HeldOut({"x1": "l1", "x9": "l9"}, SCORES)
    with pytest.raises(ValueError, match=r"does not hold y_0 of these held-out prompts \(1 missing, e.g. \['x9'\]"):
        other.on_train_epoch_end(trainer_for(data_without_m1, tmp_path / "other"), Module(ARM_A))
    with pytest.raises(FileNotFoundError, match="no y_0 file; set the IterativeImprovementEval callback's original_policy"):
        IterativeImprovementEval(y0_path=str(tmp_path / "none.jsonl")).on_train_epoch_end(
            trainer_for(data, tmp_path / "x"), Module(ARM_A))


def test_the_judges_usage_is_logged_per_evaluation(tmp_path):
    judge, independent = Judge(), Judge()
    callback = IterativeImprovementEval(judge, independent_judge=independent, iterations=2, num_prompts=10)
    trainer = trainer_for(HeldOut(), tmp_path)
    for _ in range(2):
        callback.on_train_epoch_end(trainer, Policy())
    # per evaluation, each judge is reset, then scores y_0 against itself and y_1, y_2: 3 calls
    assert judge.resets == independent.resets == 2
    assert [m["pit_eval/judge/judge_off_format"] for m in trainer.logger.logged] == [3.0, 3.0]
    assert [m["pit_eval/independent_judge/judge_off_format"] for m in trainer.logger.logged] == [3.0, 3.0]
    assert json.loads((tmp_path / "pit_eval.json").read_text())["judge_usage"] == {
        "judge/judge_off_format": 3.0, "independent_judge/judge_off_format": 3.0}
    table = callback.table()
    assert "trained-against RM win rate (not a measure)" in table and "independent RM win rate" in table


# ---- early stopping ---------------------------------------------------------------------------------------------

MONITORED = [0.2, 0.5, 0.4, 0.5, 0.3]  # the monitor prompt's exact score of y_1 after epochs 0, 1, 2, ...


class Trained(torch.nn.Module):
    """A "policy" whose answer is its weight: training epoch e sets it to e (scored by MONITORED[e])."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.frozen = torch.nn.Parameter(torch.full((2,), 7.0), requires_grad=False)

    def improve(self, pairs, temperature):
        return [f"e{int(self.w[0])}" for _ in pairs]


def test_early_stopping_stops_after_patience_and_exports_the_best_epoch(tmp_path):
    exact = {(x, f"e{e}"): s for e, s in enumerate(MONITORED) for x in ("x1", "m1")} | {("x1", "l1"): 0.0}
    data = HeldOut({"x1": "l1", "m1": "lm"}, exact)
    callback = IterativeImprovementEval(iterations=1, monitor_prompts=1, early_stop_patience=2)
    trainer, policy = trainer_for(data, tmp_path), Trained()
    stopped = []
    for epoch in range(len(MONITORED)):
        with torch.no_grad():
            policy.w.fill_(epoch)  # what training epoch `epoch` did
        trainer.current_epoch = epoch
        callback.on_train_epoch_end(trainer, policy)
        stopped.append(trainer.should_stop)
        if trainer.should_stop:
            break
    # best 0.2 (epoch 0), 0.5 (epoch 1); 0.4 and 0.5 (not higher) are two epochs without gain: stop after epoch 3
    assert stopped == [False, False, False, True]
    assert callback.monitored == [(0, 0.2), (1, 0.5), (2, 0.4), (3, 0.5)]
    state = callback.state_dict()  # what a checkpoint keeps: a resumed run goes on counting from here
    resumed = IterativeImprovementEval(iterations=1, monitor_prompts=1, early_stop_patience=2)
    resumed.load_state_dict(state)
    assert (resumed.wait, resumed.best["epoch"], resumed.monitored) == (2, 1, callback.monitored)
    restarted = trainer_for(data, tmp_path / "resumed")  # killed after deciding to stop, before exporting
    resumed.on_train_start(restarted, policy)
    assert restarted.should_stop  # no epoch past the decision

    callback.on_fit_end(trainer, policy)  # before the module's own on_fit_end, which exports
    assert policy.w.tolist() == [1.0, 1.0] and policy.frozen.tolist() == [7.0, 7.0]  # epoch 1's weights back
    saved = json.loads((tmp_path / "pit_eval.json").read_text())
    assert saved["epoch"] == 1 and saved["exact_score"] == pytest.approx([0.0, 0.5])  # epoch 1's numbers
    assert saved["early_stop"] == {"kept_epoch": 1, "last_epoch": 3,
                                   "monitor_exact_score": [[0, 0.2], [1, 0.5], [2, 0.4], [3, 0.5]]}
    assert trainer.logger.logged[-1] == {"pit_eval/early_stop/kept_epoch": 1.0}


def test_early_stopping_settings_are_checked():
    with pytest.raises(ValueError, match="set monitor_prompts"):
        IterativeImprovementEval(early_stop_patience=2)
    with pytest.raises(ValueError, match="set every_epoch: true"):
        IterativeImprovementEval(early_stop_patience=2, monitor_prompts=5, every_epoch=False)
    with pytest.raises(ValueError, match="early_stop_patience=0: give at least 1 epoch"):
        IterativeImprovementEval(early_stop_patience=0, monitor_prompts=5)
    with pytest.raises(ValueError, match="monitor_prompts=4 leaves none of the 4 held-out pairs"):
        IterativeImprovementEval(monitor_prompts=4).held_out(HeldOut())


def test_early_stopping_is_refused_under_sharded_strategies():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import ModelParallelStrategy

    callback = IterativeImprovementEval(iterations=1, num_prompts=2, monitor_prompts=2, early_stop_patience=1)
    sharded = SimpleNamespace(strategy=ModelParallelStrategy.__new__(ModelParallelStrategy))  # no process group needed
    with pytest.raises(ValueError, match="early_stop_patience keeps the best epoch's weights per process"):
        callback.setup(sharded, None, "fit")
