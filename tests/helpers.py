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
    """Writes each rank's parameter checksum and current training iteration to ``{folder}/rank{r}.json`` at fit end."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module) -> None:
        import hashlib
        import json
        from pathlib import Path

        digest = hashlib.sha256()
        for name, tensor in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        record = {"weights": digest.hexdigest(), "iteration": trainer.datamodule.iteration}
        (Path(self.folder) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
