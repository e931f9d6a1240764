"""HuLM Trainer: HF Trainer with narrow overrides only.

- create_optimizer: the HuLlama modules (and head) get their own learning rate (`state_lr_scale` x LoRA's).
- compute_loss: also collects the state diagnostics the model reports (mean |U|, injection norm), so that a
  saturated or unused state shows in the training log at once.
- compute_loss with `hold_state_at_initial` (a control): every block reads the learned initial state (the model's
  `ablate_state=True`), in training and evaluation, the schedule and the batches unchanged.
- log: adds perplexity next to every (eval) loss of a language model, and the averaged diagnostics.
- get_train_dataloader / compute_loss, with the streaming schedule (train/schedule.py) only: batches drawn from a
  pool of open authors, each reading its chunks in order, each chunk starting from the state the author's last one
  ended with (with `learn_recurrence`: that state recomputed in the step, so the recurrence gets a gradient); with
  many processes the states are exchanged after every step.
- get_train_dataloader with `token_budget`: steps of at most that many real tokens per process (the streaming
  schedule: per process on average, its global step filled to processes x budget and split by authors), the
  streaming schedule taking as many authors' next chunks as fit, the other variants rows of similar length
  (train/batches.py); every epoch as many steps (EqualEpochs), the optimizer skipping an epoch's padding steps.
- train / _save_checkpoint, streaming only: a checkpoint holds the carried states, and a resumed run continues
  from them (the sampler replays its position from the seed, the epoch and the step).
- prediction_step: message-level predictions inside a timeline come back as one row per labelled message, so
  that evaluation gathers them across batches of different shapes and compute_metrics sees (logits, labels).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hullama.train.batches import EpochBatchesLoader, PaddedRows, TokenBudgetBatches
from hullama.train.qlora import FULLY_TRAINED_MODULES
from hullama.train.schedule import STREAM_COLUMNS, AuthorStreamBatches, StateCarrier

# In every checkpoint of a streaming run: each author's carried state (train/schedule.py, StateCarrier.state_dict).
CARRIED_STATES_NAME = "carried_author_states.pt"

DIAGNOSTICS = ("state_abs_mean", "injection_norm")
# Every output but the loss and logits; the cache is "cache" from transformers 5.24 on, "past_key_values" before.
STATE_OUTPUTS = ("author_states", "final_author_state", "block_mask", "block_summaries", "cache", "past_key_values",
                 "hidden_states", "attentions", *DIAGNOSTICS)


class HuLMTrainer(Trainer):
    def __init__(self, *args, state_lr_scale: float = 1.0, report_perplexity: bool = True,
                 stream_authors: bool = False, author_pool: int = 0, stagger_authors: bool = False,
                 learn_recurrence: bool = False, author_draw: str = "uniform", token_budget: int | None = None,
                 hold_state_at_initial: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.token_budget = token_budget
        self.hold_state_at_initial = hold_state_at_initial
        self.state_lr_scale = state_lr_scale
        self.report_perplexity = report_perplexity
        self.stream_authors, self.author_pool, self.stagger_authors = stream_authors, author_pool, stagger_authors
        self.author_draw = author_draw
        self._carrier = StateCarrier(learn_recurrence=learn_recurrence)
        self._diagnostics: dict[str, list[float]] = defaultdict(list)

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, bool], list] = defaultdict(list)
        for name, param in model.named_parameters():
            if param.requires_grad:
                is_state = any(part in name.split(".") for part in FULLY_TRAINED_MODULES)
                groups[(is_state, name in decay)].append(param)
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        base_lr = optimizer_kwargs.pop("lr", self.args.learning_rate)
        self.optimizer = optimizer_cls(
            [
                {"params": params, "weight_decay": self.args.weight_decay if decayed else 0.0,
                 "lr": base_lr * (self.state_lr_scale if is_state else 1.0)}
                for (is_state, decayed), params in groups.items()
            ],
            lr=base_lr,
            **optimizer_kwargs,
        )
        step = self.optimizer.step

        def step_unless_padding(*args, **kwargs):  # wrapped before the scheduler wraps it, as torch expects
            return None if self._padding_update() else step(*args, **kwargs)

        self.optimizer.step = step_unless_padding
        return self.optimizer

    def _padding_update(self) -> bool:
        """Whether the optimizer step about to run holds only an epoch's padding steps (train/batches.EqualEpochs):
        their gradient is zero, but Adam's moments and weight decay would still move the weights."""
        sampler = getattr(self, "_equal_epochs", None)
        if sampler is None:
            return False
        accumulation = self.args.gradient_accumulation_steps
        epoch, window = divmod(self.state.global_step, math.ceil(len(sampler) / accumulation))
        return window * accumulation >= sampler.real_steps(epoch)

    def _sized(self, sampler):
        """`sampler` (an EqualEpochs) sized for the epochs the Trainer will run, so that each takes as many steps."""
        args = self.args
        if args.max_steps and args.max_steps > 0:  # the padded length is no shorter than epoch 0's
            epochs = math.ceil(args.max_steps / max(1, math.ceil(sampler.real_steps(0) / args.gradient_accumulation_steps)))
        else:
            epochs = math.ceil(args.num_train_epochs)
        sampler.set_epochs(epochs)
        self._equal_epochs = sampler
        return sampler

    def get_train_dataloader(self):
        if self.token_budget and not self.stream_authors:
            batches = self._sized(TokenBudgetBatches(self.train_dataset["length"], self.token_budget,
                                                     seed=self.args.seed, num_replicas=self.args.world_size,
                                                     rank=self.args.process_index))
            return EpochBatchesLoader(PaddedRows(self.train_dataset), batch_sampler=batches,
                                      collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers,
                                      pin_memory=self.args.dataloader_pin_memory)
        if not self.stream_authors:
            return super().get_train_dataloader()
        dataset = self.train_dataset
        batches = self._sized(AuthorStreamBatches(dataset["author_index"], dataset["chunk_index"],
                                                  self.args.per_device_train_batch_size, seed=self.args.seed,
                                                  pool=self.author_pool, stagger=self.stagger_authors,
                                                  draw=self.author_draw, num_replicas=self.args.world_size,
                                                  rank=self.args.process_index, budget=self.token_budget,
                                                  lengths=dataset["length"] if self.token_budget else None))
        # The order is the schedule: every process draws the same global batches and reads its own slice of each
        # (train/schedule.py), so the loader is neither shuffled nor sharded by accelerate.
        return EpochBatchesLoader(PaddedRows(dataset), batch_sampler=batches, collate_fn=self.data_collator,
                                  num_workers=self.args.dataloader_num_workers,
                                  pin_memory=self.args.dataloader_pin_memory)

    def train(self, resume_from_checkpoint=None, **kwargs):
        if self.stream_authors and resume_from_checkpoint:
            if resume_from_checkpoint is True:
                from transformers.trainer_utils import get_last_checkpoint

                resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
                if resume_from_checkpoint is None:
                    raise ValueError(f"no checkpoint to resume from in {self.args.output_dir}")
            saved = Path(str(resume_from_checkpoint)) / CARRIED_STATES_NAME
            if not saved.is_file():
                raise ValueError(f"{resume_from_checkpoint} holds no {CARRIED_STATES_NAME}: the streaming schedule "
                                 "cannot continue its authors' states exactly from it")
            self._carrier.load_state_dict(torch.load(saved, weights_only=True))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _save_checkpoint(self, model, trial):
        # The carried states first: a checkpoint is complete only once the Trainer writes trainer_state.json, last.
        if self.stream_authors and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(self._carrier.state_dict(), folder / CARRIED_STATES_NAME)
        super()._save_checkpoint(model, trial)

    def _exchange_states(self, ended: dict) -> dict:
        """Every process's authors' states after a step, merged (train/schedule.py: many processes)."""
        from accelerate.utils import gather_object

        mine = [(author, tuple(None if t is None else t.cpu() for t in kept)) for author, kept in ended.items()]
        return dict(gather_object(mine))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stream = {name: inputs.pop(name) for name in STREAM_COLUMNS if name in inputs}
        if stream:  # each chunk starts from its author's carried state, computed inside the forward
            self._carrier.attach(_hullama_model(model))
            self._carrier.next_chunks(stream["author_index"], stream["chunk_index"])
        if self.hold_state_at_initial:
            inputs = {**inputs, "ablate_state": True}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if stream:
            self._carrier.keep(stream["author_index"], self._carrier.entered, outputs,
                               exchange=self._exchange_states if self.args.world_size > 1 else None)
        if model.training:
            for name in DIAGNOSTICS:
                value = outputs.get(name) if hasattr(outputs, "get") else None
                if value is not None:  # one value per row (NaN for a row without real tokens)
                    self._diagnostics[name].append(float(value.float().nanmean()))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for key in [k for k in logs if self.report_perplexity and (k == "loss" or k.endswith("_loss"))]:
            logs[key.replace("loss", "perplexity")] = math.exp(min(float(logs[key]), 50.0))
        if "loss" in logs:
            for name, values in self._diagnostics.items():
                if values:
                    logs[name] = float(np.mean(values))
            self._diagnostics.clear()
        super().log(logs, start_time)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Only the logits are predictions; the state outputs differ in shape from batch to batch.
        ignore_keys = list(ignore_keys or []) + list(STATE_OUTPUTS)
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if logits is None or labels is None or logits.dim() != 4 or labels.dim() != 3:
            return loss, logits, labels
        # A timeline's per-token logits [B, K, T, C]: keep the rows of the labelled messages.
        labelled = labels != -100
        return loss, logits[labelled], labels[labelled]


def _hullama_model(model):
    """The HuLlamaModel inside a (DDP-, FSDP-, peft-) wrapped HuLlama."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner.base_model


def classification_metrics(id2label: dict | None, regression: bool):
    """compute_metrics for HuFT: weighted F1 for classes, Pearson r for regression (local evaluate modules)."""
    from hullama.eval.metrics import load_metric

    metric = load_metric("pearson_r" if regression else "weighted_f1")

    def compute(eval_prediction) -> dict[str, float]:
        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        keep = labels != -100
        if regression:
            return metric.compute(predictions=logits.reshape(len(labels), -1)[keep, 0], references=labels[keep])
        return metric.compute(predictions=logits.argmax(-1)[keep], references=labels[keep])

    return compute
