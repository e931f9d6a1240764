"""What the training scripts share at the command line: parsing, checks before any work, one-line errors, resuming.

Every argument, the output folder and the Hub settings are checked before the corpus is read or a model loaded;
a user error prints one line naming the input and exits with status 2.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from hullama.command_line import ArgumentError
from hullama.data.corpus import CorpusError
from hullama.train.args import RunArguments, explicitly_set, parse_args, resolved_args
from hullama.train.hub import HubPushError

# Errors a user can fix from the command line: printed as one line, exit status 2, no traceback.
USER_ERRORS = (ArgumentError, CorpusError, HubPushError, FileNotFoundError)
SCRATCH_LEARNING_RATE = 2e-3
# What a run writes into --output_dir; a folder holding any of these holds an earlier run.
RUN_RECORDS = ("run_args.json", "results.json", "metrics.json")
# Arguments a resumed run may change: where and how it reports, not what it trains.
RESUME_MAY_CHANGE = {"resume_from_checkpoint", "output_dir", "run_name", "logging_dir", "report_to", "push_to_hub",
                     "hub_model_id", "hub_private", "hub_base_model_id", "dataloader_num_workers",
                     "preprocessing_num_workers", "disable_tqdm", "logging_steps"}


def run_cli(script: str, argument_classes: tuple, run: Callable, argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # Several CPU processes (torchrun, accelerate --cpu): without this, accelerate sees no distributed setup
        # and each process would train on its own, unsynchronised.
        os.environ["ACCELERATE_USE_CPU"] = "true"
    try:
        *parsed, run_args = parse_args((*argument_classes, RunArguments), argv)
    except ValueError as error:  # ArgumentError and TrainingArguments' own checks
        _fail(script, error)
    model_args, training_args = parsed[0], parsed[-1]
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # pinning needs an accelerator
    # A model trained from scratch learns at a higher rate than LoRA on a pretrained base.
    if model_args.from_scratch and not explicitly_set("learning_rate", argv):
        training_args.learning_rate = SCRATCH_LEARNING_RATE
    try:
        check_training(training_args)
        check_hub(training_args, argv)
        check_model_sources(model_args)
        check_output_dir(parsed, run_args.overwrite_output_dir)
        return run(*parsed)
    except USER_ERRORS as error:
        _fail(script, error)


def _fail(script: str, error: Exception):
    message = " ".join(str(error).split())  # one line, also for a library's message of several
    print(f"{script}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_training(training_args) -> None:
    """Training arguments that would hang, train nothing or be quietly ignored."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(training_args, name) < 1:
            raise ArgumentError(f"--{name} {getattr(training_args, name)} is invalid: it must be at least 1")
    if not math.isfinite(training_args.learning_rate) or training_args.learning_rate <= 0:
        raise ArgumentError(f"--learning_rate {training_args.learning_rate} is invalid: it must be a number > 0 (0 "
                            "trains nothing)")
    if training_args.world_size > 1 and not training_args.average_tokens_across_devices:
        # a process whose step holds only padding rows would divide a zero loss by zero predicted tokens
        raise ArgumentError("--average_tokens_across_devices false is refused on several processes: the loss is "
                            "normalised by the predicted tokens of the whole step")
    epochs = training_args.num_train_epochs
    if training_args.max_steps <= 0 and not (math.isfinite(epochs) and epochs > 0):
        raise ArgumentError(f"--num_train_epochs {epochs} is invalid: it must be a number > 0 (or give --max_steps)")


def check_hub(training_args, argv: list[str]) -> None:
    """The Hub settings, before training: a push that cannot happen is found now, not after hours of training."""
    for name, ours in (("hub_private_repo", "--hub_private true|false"), ("hub_strategy", None)):
        if explicitly_set(name, argv):
            instead = f"use {ours}" if ours else "the run is pushed once, at its end, in one commit"
            raise ArgumentError(f"--{name} is not used by this script: {instead}")
    if not training_args.push_to_hub:
        return
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not training_args.hub_model_id:
        raise ArgumentError("--push_to_hub needs --hub_model_id NAME")
    try:
        validate_repo_id(training_args.hub_model_id)
    except HFValidationError as error:
        raise ArgumentError(f"--hub_model_id {training_args.hub_model_id!r} is not a valid repo id: "
                            f"{str(error).splitlines()[0]}") from None
    if constants.HF_HUB_OFFLINE:
        raise ArgumentError("--push_to_hub with HF_HUB_OFFLINE set: the run could not be pushed")
    if not (training_args.hub_token or get_token()):
        raise ArgumentError("--push_to_hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")


def _looks_local(name: str) -> bool:
    """A path rather than a Hub id (`owner/name` or `name`)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def check_model_sources(model_args) -> None:
    for flag in ("base_model", "adapter", "tokenizer"):
        name = getattr(model_args, flag)
        if name is None or Path(name).exists():
            continue
        if _looks_local(name):
            raise ArgumentError(f"--{flag} {name}: no such folder")
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(name)
        except HFValidationError:
            raise ArgumentError(f"--{flag} {name}: neither a folder nor a valid Hub repo id") from None
    for flag, needed in (("base_model", "config.json"), ("adapter", "adapter_config.json")):
        name = getattr(model_args, flag)
        if name and Path(name).is_dir() and not (Path(name) / needed).is_file():
            raise ArgumentError(f"--{flag} {name}: no {needed} in this folder")
    if model_args.base_model:  # a Llama-architecture base, its config read without running code from it
        from hullama.train.qlora import read_base_config

        read_base_config(model_args.base_model, trust_remote_code=model_args.trust_remote_code)


def check_output_dir(parsed, overwrite: bool) -> None:
    """Refuse what would lose work: an earlier run replaced unasked, an input inside the folder the run writes, a
    resume with other arguments than the run it continues."""
    model_args, training_args = parsed[0], parsed[-1]
    if not str(training_args.output_dir or "").strip():
        raise ArgumentError("--output_dir is empty: name the folder the run writes into")
    output_dir = Path(training_args.output_dir)
    blocked = next((folder for folder in (output_dir, *output_dir.parents) if folder.exists()), None)
    if blocked is not None and not blocked.is_dir():
        raise ArgumentError(f"--output_dir {output_dir}: {blocked} is a file, not a folder")
    for flag in ("base_model", "adapter", "tokenizer"):
        name = getattr(model_args, flag)
        if name and Path(name).exists() and Path(name).resolve().is_relative_to(output_dir.resolve()):
            raise ArgumentError(f"--{flag} {name} lies inside --output_dir {output_dir}, which this run writes into: "
                                "copy it elsewhere or choose another --output_dir")
    resume = training_args.resume_from_checkpoint
    resuming = resume not in (None, False, "False", "false", "")
    if resuming and str(resume).lower() != "true" and not Path(resume).is_dir():
        raise ArgumentError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
    earlier = [name for name in RUN_RECORDS if (output_dir / name).is_file()]
    if resuming and str(resume).lower() == "true" and not earlier:
        raise ArgumentError(f"--resume_from_checkpoint true: --output_dir {output_dir} holds no run to resume")
    if resuming:
        # the run a checkpoint belongs to: this output folder, or the one holding the checkpoint given
        recorded = output_dir if str(resume).lower() == "true" else next(
            (folder for folder in Path(resume).resolve().parents[:2] if (folder / "run_args.json").is_file()), None)
        if recorded is not None:
            _check_resumed_arguments(recorded, parsed)
    elif earlier and not overwrite:
        raise ArgumentError(f"--output_dir {output_dir} holds an earlier run ({earlier[0]}): resume it with "
                            "--resume_from_checkpoint true, choose another folder, or pass --overwrite_output_dir "
                            "to replace it")


def _check_resumed_arguments(run_folder: Path, parsed) -> None:
    recorded, now = json.loads((run_folder / "run_args.json").read_text()), resolved_args(*parsed)
    changed = [
        f"--{name} {recorded[group][name]!r} -> {value!r}"
        for group, values in now.items() if group in recorded
        for name, value in values.items()
        if name not in RESUME_MAY_CHANGE and name in recorded[group] and recorded[group][name] != value
    ]
    if changed:
        raise ArgumentError(f"resuming the run in {run_folder} with other arguments than it was started with "
                            f"({'; '.join(changed[:3])}): resume with the same ones, or start a new run")


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
