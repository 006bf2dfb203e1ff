"""TriPosT's LLM prompts and parsing (feedback.llm) and the local-model teacher, without a network."""

from collections.abc import Sequence

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from feedback.base import Dropped, Feedback
from feedback.llm import PACKAGED_PROMPTS, LLMTeacher, assemble_steps, parse_feedback_table, steps_before
from feedback.local import LocalModelTeacher
from modules.generation import Completion

ATTEMPT = """(1) Today is Jan 22, 2011.
(2) One week ago from today is Jan 14, 2011, that is 01/14/2011.
(Final response) So the answer is (E)."""


class EchoTeacher(LLMTeacher):
    """Answers every prompt with a fixed completion and records the prompts."""

    name = "echo"

    def __init__(self, completion: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.completion, self.prompts = completion, []

    def complete(self, prompts: Sequence[str], temperature: float, max_tokens: int) -> list[str | Dropped]:
        self.prompts += prompts
        return [self.completion] * len(prompts)


def test_the_tabular_feedback_becomes_tripost_feedback():
    completion = ' (2)\nError segment: "One week ago from today is Jan 14, 2011"\nError reason: Jan 14 is a week before Jan 21. [END]'
    feedback = parse_feedback_table(completion, ATTEMPT)
    assert feedback == Feedback(
        'Step (1) is correct. In step (2) the part "One week ago from today is Jan 14, 2011" is incorrect. '
        "This is because jan 14 is a week before Jan 21.", correct=False, step="2",
        segment="One week ago from today is Jan 14, 2011")
    final = parse_feedback_table(' (Final response)\nError segment: "the answer is (E)"\nError reason: Wrong.', ATTEMPT)
    assert final.step == "Final response" and final.text.startswith("Step (1) to step (2) are correct. In step (Final")
    first = parse_feedback_table(' (1)\nError segment: "Today is Jan 22, 2011"\nError reason: x', ATTEMPT)
    assert first.text == 'In step (1) the part "Today is Jan 22, 2011" is incorrect. This is because x.'


@pytest.mark.parametrize(("completion", "why"), [
    ("The attempt looks right to me.", "expected '(k)'"),
    (' (7)\nError segment: "Jan"\nError reason: no.', "step (7) is not a step"),
    (' (2)\nError segment: "Feb 3"\nError reason: no.', "not quoted from step (2)"),
])
def test_off_format_feedback_is_dropped_with_its_reason(completion, why):
    answer = parse_feedback_table(completion, ATTEMPT)
    assert isinstance(answer, Dropped) and answer.reason.startswith("off-format feedback") and why in answer.reason


def test_a_segment_that_quotes_keeps_its_inner_quotes():
    attempt = '(1) So the order is "red book" "white book".\n(Final response) So the answer is (A).'
    feedback = parse_feedback_table(' (1)\nError segment: "the order is "red book" "white book""\nError reason: r', attempt)
    assert feedback.segment == 'the order is "red book" "white book"'


def test_improvements_keep_the_prefix_and_stop_at_the_final_response():
    prefix = steps_before(ATTEMPT, "2")
    assert prefix == ["(1) Today is Jan 22, 2011."]
    completion = "\n(2) One week ago is Jan 15, 2011.\n(Final response) So the answer is (D). [END] trailing\n(3) junk"
    assert assemble_steps(prefix, completion, "improvement") == (
        "(1) Today is Jan 22, 2011.\n(2) One week ago is Jan 15, 2011.\n(Final response) So the answer is (D).")
    cut = assemble_steps(prefix, "\n(2) x\nQ: a new question\n(Final response) So the answer is (A).", "improvement")
    assert isinstance(cut, Dropped) and "no steps ending in '(Final response)" in cut.reason


def test_improve_renders_the_packaged_prompt_and_counts_off_format(tmp_path):
    from tasks.multiple_choice import DateUnderstanding

    task = DateUnderstanding()
    question = task.pool()[0]
    feedback = parse_feedback_table(' (2)\nError segment: "One week ago from today is Jan 14, 2011"\nError reason: r', ATTEMPT)
    teacher = EchoTeacher("\n(2) The date is 01/15/2011.\n(Final response) So the answer is (D). [END]")
    [improved] = teacher.improve(task, [(question, ATTEMPT, feedback)])
    assert improved == "(1) Today is Jan 22, 2011.\n(2) The date is 01/15/2011.\n(Final response) So the answer is (D)."
    prompt = teacher.prompts[0]
    assert prompt.startswith((PACKAGED_PROMPTS / "date_understanding" / "improve.txt").read_text().split("Q: {question}")[0])
    assert prompt.endswith(f"Q: {question.question}\nAnswer: Let's think step by step.\n{ATTEMPT} [END]\n"
                           f"Feedback: {feedback.text}\nUpdated Answer: Let's think step by step.\n"
                           "(1) Today is Jan 22, 2011.\n")
    assert EchoTeacher("nonsense").improve(task, [(question, ATTEMPT, feedback)])[0].reason.startswith("off-format")


def test_prompts_dir_overrides_and_bad_templates_are_named(tmp_path, ma_task):
    folder = tmp_path / "multistep_arithmetic"
    folder.mkdir()
    (folder / "improve.txt").write_text("MY PROMPT {question}|{answer_info}|{attempt}|{feedback}|{partial}")
    teacher = EchoTeacher("x", prompts_dir=str(tmp_path))
    assert teacher.template(ma_task, "improve").startswith("MY PROMPT")
    (folder / "rationale.txt").write_text("no placeholders here")
    with pytest.raises(ValueError, match=r"rationale.txt: prompt lacks the placeholder\(s\) \{question\}"):
        teacher.template(ma_task, "rationale")
    with pytest.raises(FileNotFoundError, match="no feedback prompt for task 'multistep_arithmetic'.*scripted_feedback"):
        teacher.template(ma_task, "feedback")


def test_scripted_feedback_never_calls_the_llm(ma_task):
    question = ma_task.questions("train")[0]
    lines = ma_task.gold_rationale(question).splitlines()
    lines[1] = lines[1][:-2] + "99."
    teacher = EchoTeacher("unused", scripted_feedback=True)
    [feedback] = teacher.feedback(ma_task, [(question, "\n".join(lines))])
    assert feedback.step == "2" and teacher.prompts == []


def test_every_packaged_prompt_has_its_placeholders():
    from feedback.llm import PLACEHOLDERS

    files = sorted(PACKAGED_PROMPTS.glob("*/*.txt"))
    assert {f.parent.name for f in files} == {"date_understanding", "logical_deduction", "multistep_arithmetic", "word_sorting"}
    for path in files:
        text = path.read_text()
        assert all(p in text for p in PLACEHOLDERS[path.stem]), path


def test_local_model_teacher_runs_a_tiny_random_model_end_to_end(tmp_path, ma_task, ma_tokenizer, monkeypatch):
    """Format plumbing, not quality: a random model's answers come back in order, a prompt longer than the model's
    positions is dropped without generating, and scripted completions go through TriPosT's parsing per item."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(ma_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8192, eos_token_id=ma_tokenizer.eos_token_id,
                         pad_token_id=ma_tokenizer.pad_token_id, bos_token_id=ma_tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "teacher")
    ma_tokenizer.save_pretrained(tmp_path / "teacher")
    teacher = LocalModelTeacher(str(tmp_path / "teacher"), device="cpu", batch_size=2, max_tokens=8)
    questions = ma_task.questions("train")[:3]
    texts = teacher.complete(["Q: 1 + 1 =\n", "Q: 2 * 3 =\n", "x " * 9000], temperature=0.0, max_tokens=8)
    assert [isinstance(t, str) for t in texts] == [True, True, False] and "8192 positions" in texts[2].reason
    assert not any(t.startswith("Q:") for t in texts[:2])  # the completion only, not the prompt
    feedback = Feedback('In step (2) the part "x" is incorrect. This is because y.', False, "2", "x")
    gold = [ma_task.gold_rationale(q) for q in questions]
    # what the model "writes" after each improvement prompt (which ends in the attempt's step (1))
    scripted = {gold[0].splitlines()[0]: "\n" + "\n".join(gold[0].splitlines()[1:]) + "\n(9) more. [END] (9) junk",
                gold[1].splitlines()[0]: " I cannot improve this. [END]",
                gold[2].splitlines()[0]: "\n(2) A = 1. [END]\n(Final response) So the answer is 1."}
    seen = []

    def fake_generate(model, prompts, **kwargs):
        texts = [ma_tokenizer.decode(p, skip_special_tokens=True) for p in prompts]
        seen.extend(texts)
        return [Completion(ma_tokenizer.encode(scripted[t.splitlines()[-1]], add_special_tokens=False), True)
                for t in texts]

    monkeypatch.setattr("feedback.local.generate", fake_generate)
    answers = teacher.improve(ma_task, [(q, g, feedback) for q, g in zip(questions, gold)])
    assert [t.splitlines()[-1] for t in seen] == [g.splitlines()[0] for g in gold]  # prompts end where to go on
    # 1st: step (1) kept + steps (2) to (Final response), what follows the final response ignored = the gold
    assert answers[0] == gold[0]
    # 2nd: no steps at all; 3rd: [END] comes before any final response
    assert [a.reason for a in answers[1:]] == ["off-format improvement: no steps ending in '(Final response) ...'"] * 2
    assert teacher.usage() == {"off_format": 2.0, "off_format/off-format improvement": 2.0}
