"""PIT's DataModule: folds written once as logs, the reward model's four orderings, SFT weights, the RL buffer."""

import json

import torch

from datamodules.interaction_log import Episode, Turn, read_shard, write_shard
from datamodules.pit import PITDataModule, pit_prompt
from datamodules.preference import HHRLHF

H, A = "\n\nHuman:", "\n\nAssistant:"


def hh_file(path, n=30):
    rows = [{"chosen": f"{H} What is {i} plus {i}?{A} It is {2 * i}.", "rejected": f"{H} What is {i} plus {i}?{A} No."}
            for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_hh_rlhf_folds_become_reward_model_and_sft_batches(tmp_path):
    data = PITDataModule(HHRLHF(source=hh_file(tmp_path / "hh.jsonl")), stage="rm", log_dir=str(tmp_path / "run"),
                         vocab_size=400, batch_size=4, val_fraction=0.2)
    data.setup("fit")
    assert sorted(p.name for p in (tmp_path / "run" / "preferences").iterdir()) == ["rl.jsonl", "rm.jsonl", "sft.jsonl"]
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 16  # 4 pairs x (w|l, w|w, l|l, l|w)
    tok = data.tokenizer
    first = tok.decode(batch["input_ids"][0][batch["attention_mask"][0] > 0], skip_special_tokens=True)
    second = tok.decode(batch["input_ids"][1][batch["attention_mask"][1] > 0], skip_special_tokens=True)
    reference, response = first.split("### Improved response:\n")
    assert reference.rstrip().endswith("### Original response:\nNo.")  # (w, l): y_l as the reference ...
    assert response.strip().startswith("It is ") and response.strip().endswith(".")  # ... y_w as the response
    assert second.count("It is") == 2  # (w, w): the chosen reply as reference and as response

    data.stage = "sft"
    sft = next(iter(data.train_dataloader()))
    row, weights = sft["input_ids"][0], sft["loss_weights"][0]
    learned = tok.decode(row[weights > 0], skip_special_tokens=False)
    assert learned.strip().startswith("It is") and learned.endswith(tok.eos_token)  # response + EOS only

    # a second DataModule on the same folder reads the same folds back instead of re-splitting
    again = PITDataModule(HHRLHF(source=str(tmp_path / "missing.jsonl")), stage="rm", log_dir=str(tmp_path / "run"))
    again.setup("fit")
    assert [e.id for e in again.folds["rm"]] == [e.id for e in data.folds["rm"]]


def test_the_rl_buffer_is_cut_into_new_minibatches_every_pass_each_row_once(tmp_path):
    data = PITDataModule(HHRLHF(source=hh_file(tmp_path / "hh.jsonl")), stage="rl", log_dir=str(tmp_path / "run"),
                         vocab_size=400, batch_size=4, ppo_epochs=3)
    data.setup("fit")
    # 5 prompts x 2 samples (a group each, by question_id), sampled at T = .7; row i's gap reward is i
    episodes = [Episode(id=f"e{i // 2}/it1/s{i % 2}", task="hh_rlhf", iteration=1, prompt=f"{H} q{i}?{A}",
                        turns=(Turn("reference", " No.", "dataset"), Turn("response", f" Yes {i}.", "policy")),
                        outcome="improved", question_id=f"e{i // 2}",
                        scores={"gap_reward": float(i), "reference_gap": 0.0, "stopped": 1.0, "temperature": 0.7})
                for i in range(10)]
    write_shard(data.rollout_dir / "iter_001.jsonl", episodes)
    data.use_iteration(1)
    batches = list(data.train_dataloader())
    assert len(batches) == 3 * 3  # ceil(10 / 4) minibatches, three passes
    passes = [batches[3 * p : 3 * p + 3] for p in range(3)]
    for p, minibatches in enumerate(passes):
        rows = [r for b in minibatches for r in b["rows"].tolist()]
        assert sorted(rows) == list(range(10))  # every row once per pass
        assert all(int(b["ppo_pass"]) == p for b in minibatches)
        for b in minibatches:  # a row's scalars travel with it
            assert b["score"].tolist() == [float(r) for r in b["rows"].tolist()]
            assert b["group"].tolist() == [r // 2 for r in b["rows"].tolist()]
            assert torch.allclose(b["temperature"], torch.full((len(b["rows"]),), 0.7))
    members = [{frozenset(b["rows"].tolist()) for b in minibatches} for minibatches in passes]
    assert members[0] != members[1] and members[1] != members[2]  # reshuffled, not only reordered
    again = list(data.train_dataloader())  # seeded by seed, epoch and pass: a resumed epoch sees the same
    assert [b["rows"].tolist() for b in again] == [b["rows"].tolist() for b in batches]
    b = batches[0]
    mask = b["response_mask"]
    assert mask.shape == (b["input_ids"].shape[0], b["input_ids"].shape[1] - 1)
    row = b["input_ids"][0]
    predicted = row[1:][mask[0] > 0]  # the tokens the masked positions predict: the response and EOS
    assert data.tokenizer.decode(predicted, skip_special_tokens=True).strip().startswith("Yes")
    assert predicted[-1].item() == data.tokenizer.eos_token_id
    assert pit_prompt(f"{H} q0?{A}", " No.").endswith("### Improved response:\n")


def test_reward_model_rows_per_pair_are_wl_ww_ll_lw(tmp_path):
    data = PITDataModule(HHRLHF(source=hh_file(tmp_path / "hh.jsonl")), stage="rm", log_dir=str(tmp_path / "run"),
                         vocab_size=400, batch_size=4, val_fraction=0.2)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    texts = [data.tokenizer.decode(ids[mask > 0], skip_special_tokens=True)
             for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    assert len(texts) == 16  # 4 pairs x 4 rows
    for k in range(4):
        i = int(texts[4 * k].split("What is ")[1].split(" plus")[0])
        x, w, l = f"{H} What is {i} plus {i}?{A}", f"It is {2 * i}.", "No."  # y_w: the chosen reply, y_l: "No."
        row = "{x}\n\n### Original response:\n{ref}\n\n### Improved response:\n {resp}"
        assert texts[4 * k : 4 * k + 4] == [
            row.format(x=x, ref=l, resp=w),  # (w, l): y_l improved into y_w, the largest gap
            row.format(x=x, ref=w, resp=w),  # (w, w): no change
            row.format(x=x, ref=l, resp=l),  # (l, l): no change, the rejected reply as its own reference
            row.format(x=x, ref=w, resp=l),  # (l, w): y_w degraded into y_l, the smallest gap
        ], texts[4 * k : 4 * k + 4]


def test_a_sampled_response_is_trained_on_its_own_token_ids(tmp_path):
    data = PITDataModule(HHRLHF(source=hh_file(tmp_path / "hh.jsonl")), stage="rl", log_dir=str(tmp_path / "run"),
                         vocab_size=400, batch_size=4)
    data.setup("fit")
    tok = data.tokenizer
    x, y_ref = f"{H} q?{A}", " No."
    # ids a policy might sample for " Yes." that tokenising the text would never give: one piece per character
    sampled = tuple(tok.convert_tokens_to_ids(list("▁Yes."))) + (tok.eos_token_id,)
    assert list(sampled[:-1]) != tok.encode(" Yes.", add_special_tokens=False)
    episode = Episode(id="e", task="hh_rlhf", iteration=1, prompt=x, outcome="improved",
                      turns=(Turn("reference", y_ref, "dataset"), Turn("response", " Yes.", "policy", sampled)),
                      scores={"gap_reward": 1.0, "reference_gap": 0.0, "stopped": 1.0})
    write_shard(tmp_path / "buffer.jsonl", [episode])
    (again,) = read_shard(tmp_path / "buffer.jsonl")
    assert again.turns[1].tokens == sampled  # the log keeps them
    encoded = data.encode_rollout(again)
    prompt = tok.encode(pit_prompt(x, y_ref), add_special_tokens=True)  # as generation encoded it
    assert encoded["input_ids"].tolist() == prompt + list(sampled)
    assert encoded["loss_weights"].tolist() == [0.0] * len(prompt) + [1.0] * len(sampled)
    # a response from elsewhere (no ids) is tokenised with its prompt as one text, EOS added when it stopped
    text_only = Episode(**{**episode.__dict__, "turns": (episode.turns[0], Turn("response", " Yes.", "policy"))})
    assert data.encode_rollout(text_only)["input_ids"].tolist() == tok.encode(pit_prompt(x, y_ref) + " Yes.") + [tok.eos_token_id]
