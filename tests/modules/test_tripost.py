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
