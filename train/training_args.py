"""The training scripts' TrainingArguments: transformers' own, with HuLlama's defaults (as trl's SFTConfig sets its
own). Imported only when a script runs or lists every option (`--help_all`): transformers' TrainingArguments takes
seconds to import, and `--help` should not wait for it."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType


def hullama_default(value, why: str):
    """A TrainingArguments field with HuLlama's default, its help saying so."""
    return field(default=value, metadata={"help": f"{why} (HuLlama's default: {value})."})


@dataclass
class HuLlamaTrainingArguments(TrainingArguments):
    """transformers' TrainingArguments with the defaults both HuLlama training scripts share (as trl's SFTConfig sets
    its own); each script's subclass sets the rest. An explicit flag or run-file value still wins."""

    per_device_train_batch_size: int = hullama_default(8, "Rows per step and process; with the token budgets: authors (recurrent) per full step, the budget's measure")
    per_device_eval_batch_size: int = hullama_default(8, "Evaluation batch size per process")
    learning_rate: float = hullama_default(2e-4, "Learning rate of LoRA (a model from scratch: 2e-3 unless set)")
    warmup_steps: float = hullama_default(0.05, "Warmup: a number of steps, or below 1 a share of them")
    weight_decay: float = hullama_default(0.01, "Weight decay")
    logging_steps: float = hullama_default(10, "Log every N steps")
    eval_strategy: IntervalStrategy | str = hullama_default("epoch", "When to evaluate: no, steps or epoch")
    save_strategy: SaveStrategy | str = hullama_default("epoch", "When to save a checkpoint: no, steps, epoch or best")
    save_total_limit: int | None = hullama_default(2, "Checkpoints kept")
    report_to: None | str | list[str] = hullama_default("none", "Loggers to report to (tensorboard, wandb, ...)")
    # the collators need every column the Trainer would drop
    remove_unused_columns: bool = hullama_default(False, "Drop dataset columns the model's forward does not name")
    seed: int = hullama_default(42, "Seed of the model's initialisation, the data order and the split")


@dataclass
class HuLMTrainingArguments(HuLlamaTrainingArguments):
    """TrainingArguments with hulm.py's defaults."""

    output_dir: str | None = hullama_default("outputs/hulm", "Where the run's models, checkpoints and results go")
    num_train_epochs: float = hullama_default(3, "Epochs")
    lr_scheduler_type: SchedulerType | str = hullama_default("cosine", "Learning-rate schedule")
    prediction_loss_only: bool = hullama_default(True, "Evaluate the loss only (perplexity)")


@dataclass
class HuFTTrainingArguments(HuLlamaTrainingArguments):
    """TrainingArguments with huft.py's defaults."""

    output_dir: str | None = hullama_default("outputs/huft", "Where the run's model, checkpoints and results go")
    num_train_epochs: float = hullama_default(10, "Epochs (early stopping may end sooner)")
    load_best_model_at_end: bool = hullama_default(True, "Keep the checkpoint that scored best on the held-out split")
