import pytest

from datamodules.tokenizer import load_tokenizer, train_sentencepiece


def test_trained_tokenizer_round_trips_and_keeps_fixed_pieces(ma_task, tmp_path):
    questions = ma_task.questions("train")
    corpus = [ma_task.prompt(q) + ma_task.gold_rationale(q) for q in questions]
    tok = train_sentencepiece(corpus, 400, tmp_path, fixed_pieces=[ma_task.answer_info])
    prompt = ma_task.prompt(questions[0])
    ids = tok.encode(prompt, add_special_tokens=False)
    assert ma_task.answer_info in tok.convert_ids_to_tokens(ids)  # the fixed header is a single token
    texts = [prompt, ma_task.gold_rationale(questions[1]), 'Feedback: In step (2) the part "x" is incorrect. Ünï ✓\n']
    reloaded = load_tokenizer(tmp_path)
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text  # exact, including newlines and unseen characters (byte fallback)
        assert reloaded.encode(text, add_special_tokens=False) == ids
    # digits are single pieces: a number is spelled the same wherever it stands
    pieces = tok.convert_ids_to_tokens(tok.encode("(128 * 9) = 1152.", add_special_tokens=False))
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["1", "2", "8", "9", "1", "1", "5", "2"]
    # ... and so is its sign: the question's "((-2" and the rationale's "(-2" end in the same pieces "-", "2"
    question = tok.convert_ids_to_tokens(tok.encode("Q: ((-2 - 3) * 4) =", add_special_tokens=False))
    rationale = tok.convert_ids_to_tokens(tok.encode("where A = (-2 - 3)", add_special_tokens=False))
    assert question[question.index("2") - 1] == rationale[rationale.index("2") - 1] == "-"
    assert tok.eos_token_id is not None and tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id


def test_a_vocab_too_small_for_the_text_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match=r"vocab_size=100 is too small .* --data.init_args.vocab_size"):
        train_sentencepiece(["some text é ü"], vocab_size=100, out_dir=tmp_path)
