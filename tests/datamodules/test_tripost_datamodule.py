import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from datamodules.examples import GOLD, IMPROVEMENT, Example
from datamodules.interaction_log import Episode, Turn, shard_path, write_shard
from datamodules.tokenizer import load_tokenizer
from datamodules.tripost import TriPosTDataModule, collate, length_grouped_batches
from tasks.base import correct_feedback


@pytest.fixture
def dm(ma_task, ma_tokenizer, tmp_path):
    dm = TriPosTDataModule(ma_task, log_dir=str(tmp_path), self_improve_weight=1.5)
    dm.tokenizer = ma_tokenizer
    return dm


def test_weights_per_segment_and_eos(dm, ma_tokenizer):
    example = Example(IMPROVEMENT, "Q: (1 + 2) =\nAnswer: Let's think step by step.\n", "(1) 1 + 2 = 4.\n",
                      'Feedback: In step (1) the part "4" is incorrect. This is because 1 + 2 is 3.', True, "x")
    encoded = dm.encode(example)
    ids, weights = encoded["input_ids"].tolist(), encoded["loss_weights"].tolist()
    n_prompt = len(ma_tokenizer.encode(example.prompt, add_special_tokens=True))
    n_answer = len(ma_tokenizer.encode(example.answer, add_special_tokens=False))
    assert ids[-1] == ma_tokenizer.eos_token_id  # the model learns to stop
    assert ma_tokenizer.decode(ids[:-1]) == example.text  # segments re-join to the exact text
    assert weights[:n_prompt] == [0.0] * n_prompt
    assert weights[n_prompt : n_prompt + n_answer] == [1.0] * n_answer
    assert set(weights[n_prompt + n_answer :]) == {1.5} and len(weights) == len(ids)

    gold = Example(GOLD, example.prompt, example.answer, "Feedback: Step (1) to step (1) are correct.", False, "g")
    assert set(dm.encode(gold)["loss_weights"].tolist()[n_prompt:]) == {1.0}
    dm.learn_prompt = True
    assert dm.encode(example)["loss_weights"].tolist()[:n_prompt] == [1.0] * n_prompt


def test_wrong_attempts_take_their_own_weight_and_leave_the_loss_count(dm, ma_tokenizer):
    prompt = "Q: (1 + 2) =\nAnswer: Let's think step by step.\n"
    wrong = Example(IMPROVEMENT, prompt, "(1) 1 + 2 = 4.\n", 'Feedback: In step (1) the part "4" is incorrect.', True,
                    "x", attempt_correct=False)
    n_prompt = len(ma_tokenizer.encode(prompt, add_special_tokens=True))
    n_answer = len(ma_tokenizer.encode(wrong.answer, add_special_tokens=False))
    assert set(dm.encode(wrong)["loss_weights"].tolist()[n_prompt : n_prompt + n_answer]) == {1.0}  # reference
    dm.wrong_attempt_weight = 0.0
    weights = dm.encode(wrong)["loss_weights"]
    assert weights.tolist()[: n_prompt + n_answer] == [0.0] * (n_prompt + n_answer)
    assert set(weights.tolist()[n_prompt + n_answer :]) == {1.5}
    right = Example(IMPROVEMENT, prompt, "(1) 1 + 2 = 3.\n", "Feedback: Step (1) to step (1) are correct.", True, "y")
    assert set(dm.encode(right)["loss_weights"].tolist()[n_prompt : n_prompt + n_answer]) == {1.0}
    with pytest.raises(ValueError, match="wrong_attempt_weight=-1"):
        TriPosTDataModule(dm.task, wrong_attempt_weight=-1)


def test_collate_pads_right_with_zero_weight():
    items = [{"input_ids": torch.tensor([5, 6, 7]), "loss_weights": torch.tensor([0.0, 1.0, 1.5])},
             {"input_ids": torch.tensor([8]), "loss_weights": torch.tensor([1.0])}]
    batch = collate(items, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["loss_weights"].tolist() == [[0.0, 1.0, 1.5], [1.0, 0.0, 0.0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_length_grouped_batches_cover_everything_once():
    lengths = [(i * 37) % 101 for i in range(300)]
    batches = length_grouped_batches(lengths, batch_size=16, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(300))
    padding = sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)
    assert padding < 0.1 * sum(lengths)  # grouped by length: little padding


def test_iteration_zero_is_gold_rationales_without_feedback(dm, ma_task):
    examples = dm.training_examples()
    assert len(examples) == len(ma_task.questions("train"))
    assert all(e.kind == GOLD and e.self_improve == "" for e in examples)


def test_an_iteration_with_too_few_examples_is_refused_unless_min_examples_is_0(dm, ma_task):
    q = ma_task.questions("train")[0]
    dropped = Episode(id="a", task=ma_task.name, iteration=1, prompt=ma_task.prompt(q),
                      turns=(Turn("attempt", "garbage", "policy"),), outcome="dropped", reason="empty attempt")
    write_shard(shard_path(dm.log_dir, 1), [dropped])
    dm.use_iteration(1)
    assert dm.min_examples == 20  # the documented default
    with pytest.raises(ValueError, match=r"iteration 1: .*iter_001.jsonl gives 0 training examples \(0 improvement, "
                                         r"0 non-improvement\) from 1 rollouts \(\{'dropped': 1\}; most common reasons: "
                                         r"\{'empty attempt': 1\}\), fewer than --data.init_args.min_examples=20\."):
        dm.training_examples()
    dm.min_examples = 0  # asked for: gold demos alone, with a warning
    with pytest.warns(UserWarning, match="no training examples; training on gold only"):
        examples = dm.training_examples()
    assert examples and all(e.kind == GOLD and e.self_improve.startswith("Feedback: Step (1) to step") for e in examples)
    assert dm.last_counts == {GOLD: len(examples)}


def test_correct_rollouts_alone_are_refused_as_re_balancing_keeps_none_of_them(dm, ma_task):
    q = ma_task.questions("train")[0]
    rationale = ma_task.gold_rationale(q)
    correct = Episode(id="a", task=ma_task.name, iteration=1, prompt=ma_task.prompt(q),
                      turns=(Turn("attempt", rationale, "policy"), Turn("feedback", correct_feedback(rationale), "gold")),
                      outcome="correct")
    write_shard(shard_path(dm.log_dir, 1), [correct])
    dm.use_iteration(1)
    dm.min_examples = 1  # one non-improvement example: enough by count, but r : 1 : 1 keeps 0 of it
    with pytest.raises(ValueError, match=r"gives no improvement example, so re-balancing at "
                                         r"--data.init_args.improve_data_ratio=1.5 keeps none of its 1 non-improvement"):
        dm.training_examples()


def test_use_iteration_needs_the_shard(dm):
    with pytest.raises(FileNotFoundError, match="iter_002.jsonl"):
        dm.use_iteration(2)


def _save_word_level(tmp_path, special):
    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2, "</s>": 3, "<pad>": 4}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **special).save_pretrained(tmp_path)
    return tmp_path


def test_a_tokenizer_without_eos_is_refused_and_one_without_pad_pads_with_eos(tmp_path):
    with pytest.raises(ValueError, match="no EOS token"):
        load_tokenizer(_save_word_level(tmp_path / "no_eos", {"pad_token": "<pad>"}))
    no_pad = load_tokenizer(_save_word_level(tmp_path / "no_pad", {"eos_token": "</s>"}))
    assert (no_pad.eos_token_id, no_pad.pad_token_id, len(no_pad)) == (3, 3, 5)  # no new token, no new embedding row
    ok = load_tokenizer(_save_word_level(tmp_path / "ok", {"eos_token": "</s>", "pad_token": "<pad>"}))
    assert (ok.eos_token_id, ok.pad_token_id) == (3, 4)


def test_examples_longer_than_max_length_are_dropped_with_a_count(tmp_path, ma_task, monkeypatch):
    folder = _save_word_level(tmp_path / "tok", {"eos_token": "</s>", "pad_token": "<pad>"})
    dm = TriPosTDataModule(ma_task, log_dir=str(tmp_path), max_length=5)
    dm.tokenizer = load_tokenizer(folder)  # one token per word, no BOS: length = words + EOS
    examples = [Example(GOLD, "a ", "b b", "", False, "four"),  # "a b b": 3 words + EOS = 4 tokens
                Example(GOLD, "a ", "b b ", "a b", False, "six"),  # "a b b a b": 5 + EOS = 6 > 5, dropped
                Example(GOLD, "a b ", "b ", "a", False, "five")]  # "a b b a": 4 + EOS = 5, kept (at the limit)
    monkeypatch.setattr(dm, "training_examples", lambda: examples)
    with pytest.warns(UserWarning) as warned:
        kept = dm.encoded_training_examples()
    # ids: a 0, b 1, </s> 3
    assert [e["input_ids"].tolist() for e in kept] == [[0, 1, 1, 3], [0, 1, 1, 0, 3]]
    assert [str(w.message) for w in warned] == [
        "dropped 1 of 3 examples longer than max_length=5 tokens (raise --data.init_args.max_length to keep them)"]
