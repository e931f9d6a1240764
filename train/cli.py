"""What the training scripts share at the command line: parsing, one-line errors, resuming."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from train.args import ArgumentError, explicitly_set, parse_args
from train.corpus import CorpusError
from train.hub import HubPushError

# Errors a user can fix from the command line: printed as one line, exit status 2, no traceback.
USER_ERRORS = (ArgumentError, CorpusError, HubPushError, FileNotFoundError)
SCRATCH_LEARNING_RATE = 2e-3
# TrainingArguments defaults both scripts share (an explicit flag or YAML value still wins).
TRAINING_DEFAULTS = dict(
    per_device_train_batch_size=8,
    per_device_eval_batch_size=8,
    learning_rate=2e-4,
    warmup_steps=0.05,
    weight_decay=0.01,
    logging_steps=10,
    eval_strategy="epoch",
    save_strategy="epoch",
    save_total_limit=2,
    report_to="none",
    remove_unused_columns=False,  # the collators need every column the Trainer would drop
    seed=42,
)


def run_cli(script: str, argument_classes: tuple, defaults: dict, run: Callable, argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # Several CPU processes (torchrun, accelerate --cpu): without this, accelerate sees no distributed setup
        # and each process would train on its own, unsynchronised.
        os.environ["ACCELERATE_USE_CPU"] = "true"
    try:
        parsed = parse_args(argument_classes, argv, defaults=defaults)
    except ValueError as error:  # ArgumentError and TrainingArguments' own checks
        _fail(script, error)
    model_args, training_args = parsed[0], parsed[-1]
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # pinning needs an accelerator
    # A model trained from scratch learns at a higher rate than LoRA on a pretrained base.
    if model_args.from_scratch and not explicitly_set("learning_rate", argv):
        training_args.learning_rate = SCRATCH_LEARNING_RATE
    try:
        return run(*parsed)
    except USER_ERRORS as error:
        _fail(script, error)


def _fail(script: str, error: Exception):
    print(f"{script}: error: {error}", file=sys.stderr)
    raise SystemExit(2)


def resume_point(resume, run_dir: Path):
    """--resume_from_checkpoint true resumes a run from its own last checkpoint (if it has one)."""
    if resume in (None, False, "False", "false", ""):
        return None
    if str(resume).lower() == "true":
        return last_complete_checkpoint(run_dir)
    return resume


def last_complete_checkpoint(run_dir: Path) -> str | None:
    """The newest checkpoint that was fully written. Trainer writes trainer_state.json last, so a run killed
    while saving leaves a folder without it, which must not be resumed from."""
    complete = [p for p in Path(run_dir).glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    complete = [p for p in complete if p.name.split("-")[-1].isdigit()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None
