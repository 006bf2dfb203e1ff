from types import SimpleNamespace

import pytest

from modules.generation import Completion
from modules.tripost import TriPosTModule, parse_generation, stage_lr_factor
from tasks.base import Question

ATT = "(1) 1 + 2 = 4.\n(Final response) So the answer is 4."
FIX = "(1) 1 + 2 = 3.\n(Final response) So the answer is 3."
ERR = 'In step (1) the part "1 + 2 = 4" is incorrect. This is because 1 + 2 is 3.'
OK = "Step (1) to step (1) are correct. The final response is also correct."
UPDATED = "Updated Answer: Let's think step by step."


def test_parse_generation():
    assert parse_generation(ATT) == (ATT, None, None)
    assert parse_generation(f"{ATT}\nFeedback: {OK}") == (ATT, OK, None)
    assert parse_generation(f"{ATT}\nFeedback: {ERR}\n{UPDATED}\n{FIX}") == (ATT, ERR, FIX)
    # a second feedback after the update is not part of the update; a new question ends the text
    assert parse_generation(f"{ATT}\nFeedback: {ERR}\n{UPDATED}\n{FIX}\nFeedback: {OK}\nQ: 9 =") == (ATT, ERR, FIX)
    assert parse_generation(f"{ATT}\nQ: (5 + 5) =\nAnswer: ...") == (ATT, None, None)
    assert parse_generation(f"Feedback: {OK}") == ("", OK, None)
    # a tokenizer may decode a line-initial piece with its space ("\n▁Feedback" -> "\n Feedback"): tolerated
    assert parse_generation(f" {ATT}\n Feedback: {ERR}\n  {UPDATED}\n {FIX}") == (ATT, ERR, FIX)


def test_schedule_stages():
    module = TriPosTModule(warmup_epochs=3, epochs_per_iteration=2)
    assert [module.stage_of(e)[0] for e in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    assert [module.finished_stage(e) for e in range(7)] == [None, None, 0, None, 1, None, 2]


class WordTokenizer:
    """Maps each distinct line to one id, so fake generations can be scripted by text."""

    eos_token_id, pad_token_id = 0, 1

    def __init__(self):
        self.vocab = {}

    def encode(self, text, add_special_tokens=False):
        return [self.vocab.setdefault(part, len(self.vocab) + 2) for part in text.split("\n") if part]

    def decode(self, ids, skip_special_tokens=True):
        inverse = {v: k for k, v in self.vocab.items()}
        return "\n".join(inverse[i] for i in ids)


def test_self_improve_loop_reprompts_with_the_latest_attempt(monkeypatch):
    tok = WordTokenizer()
    module = TriPosTModule(max_new_tokens=16)
    module.model = object()
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(tokenizer=tok))  # only the tokenizer is needed
    task = SimpleNamespace(prompt=lambda q: f"Q: {q.question}\nAnswer: Let's think step by step.\n")
    questions = [Question("a", "1 + 2 =", "3", "b", True), Question("b", "2 + 2 =", "4", "b", True)]
    calls = []

    def fake_generate(prompts, temperature, progress=None):
        calls.append([tok.decode(p) for p in prompts])
        outputs = []
        for p in prompts:
            text = tok.decode(p)
            if text.endswith(FIX):  # round 2: the re-prompt ends with the latest attempt
                outputs.append(f"Feedback: {OK}")
            elif "1 + 2" in text:
                outputs.append(f"{ATT}\nFeedback: {ERR}\n{UPDATED}\n{FIX}")
            else:
                outputs.append(f"{FIX}\nFeedback: {OK}")
        return [Completion(tok.encode(o), stopped=True) for o in outputs]

    monkeypatch.setattr(module, "generate", fake_generate)
    traces = module.self_improve(task, questions, max_rounds=3)
    assert traces[0].attempts == [ATT, FIX] and traces[0].feedbacks == [ERR, OK]
    assert traces[1].attempts == [FIX] and traces[1].feedbacks == [OK]
    assert len(calls) == 2 and len(calls[1]) == 1  # only the question still improving goes to round 2
    assert calls[1][0] == f"Q: 1 + 2 =\nAnswer: Let's think step by step.\n{FIX}"

    traces = module.self_improve(task, questions[:1], max_rounds=1)  # no round left for the update's feedback
    assert traces[0].attempts == [ATT, FIX] and traces[0].feedbacks == [ERR, None]


def test_stage_lr_factor_warms_up_then_decays_to_the_floor():
    assert stage_lr_factor(0.0, 0.1, 0.1) == pytest.approx(1e-3)  # never 0: the first step still moves
    # halfway through the warm-up: 0.5 * (0.1 + 0.9 * 0.5 * (1 + cos 9°)), cos 9° = 0.987688 -> 0.5 * 0.994460
    assert stage_lr_factor(0.05, 0.1, 0.1) == pytest.approx(0.497230, abs=1e-6)
    # warm-up done, the cosine 18° in: 0.1 + 0.9 * 0.5 * (1 + cos 18°), cos 18° = 0.951057 -> 0.977975
    assert stage_lr_factor(0.1, 0.1, 0.1) == pytest.approx(0.977975, abs=1e-6)
    assert stage_lr_factor(1.0, 0.1, 0.1) == pytest.approx(0.1)
    assert stage_lr_factor(0.5, 0.0, 0.2) == pytest.approx(0.6)  # no warm-up: halfway down the cosine


# ---- the loop's continuations and forced updates, with scripted policies -------------------------------------------

MID = "(1) 1 + 2 = 5.\n(Final response) So the answer is 5."
ERR_MID = 'In step (1) the part "1 + 2 = 5" is incorrect. This is because 1 + 2 is 3.'
TASK = SimpleNamespace(prompt=lambda q: f"Q: {q.question}\nAnswer: Let's think step by step.\n")
QUESTIONS = [Question("a", "1 + 2 =", "3", "b", True), Question("b", "2 + 2 =", "4", "b", True)]
# the prompts as WordTokenizer decodes them (it drops empty lines, so no trailing newline)
PROMPT_A, PROMPT_B = "Q: 1 + 2 =\nAnswer: Let's think step by step.", "Q: 2 + 2 =\nAnswer: Let's think step by step."


def scripted_module(monkeypatch, policy, **hparams):
    """A module whose ``generate`` answers each decoded prompt with ``policy(prompt) -> (output, stopped)``; also
    returns the decoded prompts of every ``generate`` call."""
    tok = WordTokenizer()
    module = TriPosTModule(max_new_tokens=16, **hparams)
    module.model = object()
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(tokenizer=tok))  # only the tokenizer is needed
    calls = []

    def fake_generate(prompts, temperature, progress=None):
        calls.append([tok.decode(p) for p in prompts])
        return [Completion(tok.encode(output), stopped=stopped) for output, stopped in map(policy, calls[-1])]

    monkeypatch.setattr(module, "generate", fake_generate)
    return module, calls


@pytest.mark.parametrize("info", ["", " Recall the order of operations."])  # a task's answer_info, e.g. arithmetic's
def test_a_policy_that_stops_after_error_feedback_is_asked_for_the_update(monkeypatch, info):
    task = SimpleNamespace(prompt=lambda q: f"Q: {q.question}\nAnswer: Let's think step by step.{info}\n")
    prompt_a, updated = f"{PROMPT_A}{info}", f"{UPDATED}{info}"  # training repeats the info in the update's header

    def policy(prompt):
        if prompt.endswith(updated):  # a forced re-prompt: write the update only, as training taught
            return (FIX if ERR_MID in prompt else MID), True
        if prompt.endswith(MID):
            return f"Feedback: {ERR_MID}", True  # round 2: error feedback, then EOS again
        if prompt.endswith(FIX):
            return f"Feedback: {OK}", True
        return f"{ATT}\nFeedback: {ERR}", True  # round 1: attempt, error feedback, EOS: no update

    module, calls = scripted_module(monkeypatch, policy)
    (trace,) = module.self_improve(task, QUESTIONS[:1], max_rounds=3)
    assert calls == [
        [prompt_a],
        [f"{prompt_a}\n{ATT}\nFeedback: {ERR}\n{updated}"],  # the training layout, up to the update's header
        [f"{prompt_a}\n{MID}"],  # the forced update is the latest attempt of round 2
        [f"{prompt_a}\n{MID}\nFeedback: {ERR_MID}\n{updated}"],  # round 2's re-prompt follows that attempt
        [f"{prompt_a}\n{FIX}"],
    ]
    assert trace.attempts == [ATT, MID, FIX] and trace.feedbacks == [ERR, ERR_MID, OK]
    assert (trace.forced_updates, trace.continuations, trace.cut_off) == (2, 0, False)

    module, calls = scripted_module(monkeypatch, policy, max_continuations=0)  # no extra call: no update
    (trace,) = module.self_improve(task, QUESTIONS[:1], max_rounds=3)
    assert calls == [[prompt_a]] and trace.attempts == [ATT] and trace.feedbacks == [ERR]


def test_a_cut_off_output_is_continued_from_the_prompt_and_what_it_wrote(monkeypatch):
    cut_in_update = f"(Final response) So the answer is 4.\nFeedback: {ERR}\n{UPDATED}\n(1) 1 + 2 = 3."
    outputs = {
        PROMPT_A: ("(1) 1 + 2 = 4.", False),  # cut inside the attempt
        f"{PROMPT_A}\n(1) 1 + 2 = 4.": (cut_in_update, False),  # cut again, inside the update
        f"{PROMPT_A}\n(1) 1 + 2 = 4.\n{cut_in_update}": ("(Final response) So the answer is 3.", True),
        # cut off, but after a further feedback: the update it holds is whole, nothing to continue
        PROMPT_B: (f"{ATT}\nFeedback: {ERR}\n{UPDATED}\n{FIX}\nFeedback: {OK}", False),
        f"{PROMPT_A}\n{FIX}": (f"Feedback: {OK}", True),
        f"{PROMPT_B}\n{FIX}": (f"Feedback: {OK}", True),
    }
    module, calls = scripted_module(monkeypatch, outputs.__getitem__)
    traces = module.self_improve(TASK, QUESTIONS, max_rounds=3)
    assert calls == [
        [PROMPT_A, PROMPT_B],
        [f"{PROMPT_A}\n(1) 1 + 2 = 4."],  # only the cut-off output goes on: prompt + what it wrote so far
        [f"{PROMPT_A}\n(1) 1 + 2 = 4.\n{cut_in_update}"],
        [f"{PROMPT_A}\n{FIX}", f"{PROMPT_B}\n{FIX}"],  # round 2: the update parsed from the three pieces as one
    ]
    for trace in traces:
        assert trace.attempts == [ATT, FIX] and trace.feedbacks == [ERR, OK] and not trace.cut_off
    assert [t.continuations for t in traces] == [2, 0]


def test_an_output_still_cut_off_after_the_cap_never_makes_its_update_the_answer(monkeypatch):
    def policy(prompt):  # never stops: the update it starts is never finished
        if prompt == PROMPT_A:
            return f"{ATT}\nFeedback: {ERR}\n{UPDATED}\n(1) 1 + 2 = 3.", False
        return "(2) 3 + 0 = 3.", False

    module, calls = scripted_module(monkeypatch, policy)  # default cap: 2 continuations
    (trace,) = module.self_improve(TASK, QUESTIONS[:1], max_rounds=3)
    assert len(calls) == 3  # 1 + max_continuations calls, and no round 2: there is no whole update to re-prompt
    assert calls[2] == [f"{PROMPT_A}\n{ATT}\nFeedback: {ERR}\n{UPDATED}\n(1) 1 + 2 = 3.\n(2) 3 + 0 = 3."]
    assert trace.attempts == [ATT] and trace.feedbacks == [ERR]  # the first attempt is the final one
    assert trace.cut_off and trace.continuations == 2

    # an attempt cut mid-way stays the attempt (judged as is: it has no final response), with no feedback
    module, calls = scripted_module(monkeypatch, lambda prompt: ("(1) 1 + 2 = 4.", False), max_continuations=0)
    (trace,) = module.self_improve(TASK, QUESTIONS[:1], max_rounds=3)
    assert calls == [[PROMPT_A]] and trace.attempts == ["(1) 1 + 2 = 4."] and trace.feedbacks == [None]
    assert trace.cut_off and trace.continuations == 0

    with pytest.raises(ValueError, match="max_continuations=-1"):
        TriPosTModule(max_continuations=-1)
