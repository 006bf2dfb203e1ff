"""Command line: ``python cli.py fit --config configs/tripost/multistep_arithmetic_tiny.yaml``.

LightningCLI in subclass mode: the YAML picks the LightningModule and DataModule by ``class_path`` (the plugin
mechanism; there is no registry), their typed ``__init__`` arguments are the flags, and their docstrings are
``--help``. ``--print_config`` shows the resolved config, ``--ckpt_path last`` resumes a run. A pretrained
``--model.init_args.model`` brings its own tokenizer: ``--data.init_args.tokenizer`` defaults to the same place.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Runs from any working directory: the project's packages (modules/, datamodules/, ...) sit next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lightning.pytorch import LightningDataModule, LightningModule  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402


class SelfImproveCLI(LightningCLI):
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        model, data = config.model.init_args, config.data.init_args
        # the model's own tokenizer unless the data names one (modules without a pretrained `model` have neither)
        if model.get("model") is not None and "tokenizer" in data and data.tokenizer is None:
            data.tokenizer = model.model


def main(args: list[str] | None = None) -> LightningCLI:
    return SelfImproveCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
