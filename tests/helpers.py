"""Test-only callbacks, importable by class path from the CLI (``--trainer.callbacks+=tests.helpers.CrashAtEpoch``)."""

from lightning.pytorch import Callback


class CrashAtEpoch(Callback):
    """Simulates a killed run: raises when epoch ``epoch`` starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise SystemExit(f"simulated kill at the start of epoch {self.epoch}")


class WeightsDigest(Callback):
    """Writes each rank's parameter checksum, per-tensor sums and current training iteration to
    ``{folder}/rank{r}.json`` at fit end.
    Sharded (DTensor) parameters are assembled first (a collective), so ranks under FSDP2 compare whole weights."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module) -> None:
        import hashlib
        import json
        from pathlib import Path

        from torch.distributed.tensor import DTensor

        digest, sums = hashlib.sha256(), {}
        for name, tensor in sorted(pl_module.state_dict().items()):
            if isinstance(tensor, DTensor):
                tensor = tensor.full_tensor()
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            sums[name] = float(tensor.detach().double().sum())
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        record = {"weights": digest.hexdigest(), "iteration": trainer.datamodule.iteration, "sums": sums}
        (Path(self.folder) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def assert_export_holds(folder, sums: dict[str, float]) -> None:
    """The Hugging Face folder loads with plain transformers and holds the weights ``WeightsDigest`` summed
    (the LightningModule's ``model.*`` tensors)."""
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    trained = {name.removeprefix("model."): value for name, value in sums.items() if name.startswith("model.")}
    assert len(trained) >= 10 and set(trained) <= set(exported), sorted(set(trained) - set(exported))
    wrong = [n for n, v in trained.items() if abs(float(exported[n].double().sum()) - v) > 1e-6]
    assert not wrong, f"exported weights differ from the trained ones: {wrong}"


class CrashAtBatch(Callback):
    """Simulates a run killed mid-epoch: raises when batch ``batch`` of epoch ``epoch`` starts."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise SystemExit(f"simulated kill at batch {self.batch} of epoch {self.epoch}")


class LearningRates(Callback):
    """Writes ``[epoch, batch_idx, batches in the epoch, learning rate the batch is trained with]`` for every
    training batch to ``{path}`` (JSON) at fit end."""

    def __init__(self, path: str) -> None:
        self.path, self.rows = path, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append([trainer.current_epoch, batch_idx, trainer.num_training_batches, lr])

    def on_fit_end(self, trainer, pl_module) -> None:
        import json
        from pathlib import Path

        Path(self.path).write_text(json.dumps(self.rows))


GREEDY_PROMPT = ("Q: ((1 + 2) * 3) =\nAnswer: Let's think step by step. Recall that the order of operations is "
                 "parentheses first.\n")


class GreedyTokens(Callback):
    """Writes the in-training policy's greedy completion of ``GREEDY_PROMPT`` (token ids) to ``{path}`` (JSON) at fit
    end, before the module exports it. (The prompt is fixed here: a multi-line string does not survive a CLI flag.)"""

    def __init__(self, path: str, max_new_tokens: int = 24) -> None:
        self.path, self.prompt, self.max_new_tokens = path, GREEDY_PROMPT, max_new_tokens

    def on_fit_end(self, trainer, pl_module) -> None:
        import json
        from pathlib import Path

        from modules.generation import generate

        tok = trainer.datamodule.tokenizer
        (completion,) = generate(pl_module.model, [tok.encode(self.prompt, add_special_tokens=True)],
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                 max_new_tokens=self.max_new_tokens)
        Path(self.path).write_text(json.dumps(completion.tokens))


class Diverge(Callback):
    """Makes training diverge at batch ``batch`` of epoch ``epoch`` (-1: the epoch's last batch): ``what="loss"``
    turns that batch's loss weights into NaN before its step; ``what="weights"`` sets one weight to infinity after it."""

    def __init__(self, epoch: int, batch: int, what: str = "loss") -> None:
        self.epoch, self.batch, self.what = epoch, batch, what

    def _hit(self, trainer, batch_idx) -> bool:
        target = self.batch if self.batch >= 0 else trainer.num_training_batches + self.batch
        return trainer.current_epoch == self.epoch and batch_idx == target

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.what == "loss" and self._hit(trainer, batch_idx):
            batch["loss_weights"].fill_(float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.what == "weights" and self._hit(trainer, batch_idx):
            import torch

            with torch.no_grad():
                next(pl_module.model.parameters()).view(-1)[0] = float("inf")
