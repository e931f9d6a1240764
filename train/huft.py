"""HuFT: human-aware fine-tuning of a classifier or regressor, with or without the author's context.

`--author_context none` is standard fine-tuning (each message alone: the paper's baseline); `in_context` gives the
message its author's earlier messages as plain text in the window; `recurrent` reads the author's whole timeline
as HuLlama blocks with the author state. All three predict exactly the same labelled messages (or authors).
Evaluation reports weighted F1 (classes) or Pearson r (regression) every epoch; training stops early when it
stops improving, and the best checkpoint is the one kept.

    python train/huft.py                                              # synthetic stance task, from scratch
    accelerate launch train/huft.py --base_model meta-llama/Meta-Llama-3-8B \\
        --adapter me/Llama-3-8B-HuLM --train_file ../shared/data/hart/abo_train.jsonl \\
        --validation_file ../shared/data/hart/abo_dev.jsonl --task message --author_context recurrent \\
        --block_size 1024 --bf16 --output_dir outputs/abo-recurrent
    python train/huft.py --train_file authors.csv --task author --regression --label_column age
    python train/huft.py --task_name stance_abortion --base_model PATH --author_context recurrent   # eval/tasks.py
    python train/huft.py --help                 # HuLlama's own options (--help_all: every option)

Outputs (under --output_dir): the best model or adapter with its head, `metrics.json`, `run_args.json`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hullama.command_line import ArgumentError
from hullama.train.args import (
    LABEL_ALIASES, VARIANTS, DataArguments, HubArguments, ModelArguments, RunArguments, quick_help, save_run_args,
)

SCRIPT = "huft.py"


@dataclass
class HuFTArguments:
    task: str = field(default="message", metadata={"help": "message (labels on messages inside the timeline) or "
                                                           "author (one label per author)."})
    author_context: str = field(default="recurrent", metadata={"help": "none | in_context | recurrent."})
    regression: bool = field(default=False, metadata={"help": "Labels are real numbers (Pearson r), not classes."})
    label_aliases: str = field(default="none", metadata={"help": "Canonical class names: none | semeval_sentiment "
                                                                 "(objective, objective-OR-neutral -> neutral)."})
    early_stopping_patience: int = field(default=3, metadata={"help": "Evaluations without improvement before "
                                                                      "training stops (0: never stop early)."})
    task_name: str | None = field(default=None, metadata={
        "help": "One of the eight downstream tasks of eval/tasks.py (e.g. stance_abortion, sentiment, "
                "commit_region): its train / dev / test splits replace --train_file / --validation_file (the dev "
                "split selects the checkpoint), its level and labels replace --task / --regression / "
                "--label_aliases, and the test split is scored at the end."})
    data_dir: str | None = field(default=None, metadata={"help": "With --task_name: the folder holding hart/ and "
                                                                 "commits/ (default: ../shared/data)."})

    def __post_init__(self):
        if self.task not in ("message", "author"):
            raise ArgumentError(f"--task {self.task!r}: choose message or author")
        if self.author_context not in VARIANTS:
            raise ArgumentError(f"--author_context {self.author_context!r}: choose from {', '.join(VARIANTS)}")
        if self.label_aliases not in LABEL_ALIASES:
            raise ArgumentError(f"--label_aliases {self.label_aliases!r}: choose from {', '.join(LABEL_ALIASES)}")
        if self.early_stopping_patience < 0:
            raise ArgumentError("--early_stopping_patience must be >= 0")
        if self.task_name is not None:
            from hullama.eval.tasks import get_task

            try:
                spec = get_task(self.task_name)
            except ValueError as e:
                raise ArgumentError(f"--task_name: {str(e).splitlines()[0]}") from None
            self.task, self.regression = spec.level, spec.regression


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    argv = quick_help((ModelArguments, DataArguments, HuFTArguments, HubArguments, RunArguments), argv)
    from hullama.train.cli import run_cli  # the heavy imports, after the quick help
    from hullama.train.training_args import HuFTTrainingArguments

    return run_cli(SCRIPT, (ModelArguments, DataArguments, HuFTArguments, HubArguments, HuFTTrainingArguments),
                   run, argv)


def run(model_args, data_args, huft_args, hub_args, training_args) -> dict:
    from transformers import EarlyStoppingCallback, set_seed

    from hullama.data.blocks import BlockConfig, build_blocks
    from hullama.data.corpus import SEMEVAL_SENTIMENT_ALIASES
    from hullama.train.cli import resume_point
    from hullama.train.data_setup import load_corpora
    from hullama.train.hub import push_training_output
    from hullama.train.output import save_output, write_model_card
    from hullama.train.qlora import adapter_base, hullama_config, load_model, load_tokenizer, training_report
    from hullama.train.trainer import HuLMTrainer, classification_metrics

    set_seed(training_args.seed)
    push, hub_model_id = training_args.push_to_hub, training_args.hub_model_id
    if push and not hub_model_id:
        raise ArgumentError("--push_to_hub needs --hub_model_id NAME")
    training_args.push_to_hub = False
    if model_args.adapter and not model_args.base_model:
        model_args.base_model = adapter_base(model_args.adapter)
    if not data_args.label_column:
        raise ArgumentError("fine-tuning needs --label_column")
    metric = "pearson_r" if huft_args.regression else "weighted_f1"
    training_args.metric_for_best_model = metric
    training_args.greater_is_better = True
    output_dir = Path(training_args.output_dir)
    cache = data_args.cache_dir(output_dir)
    main_process = training_args.process_index == 0

    test = None
    with training_args.main_process_first(desc="corpus"):
        if huft_args.task_name:
            train_corpus, held_out, test = registry_splits(huft_args, data_args)
        else:
            train_corpus, held_out = load_corpora(
                data_args, task=huft_args.task, seed=training_args.seed, regression=huft_args.regression,
                label_aliases=dict(zip(LABEL_ALIASES, (None, SEMEVAL_SENTIMENT_ALIASES)))[huft_args.label_aliases],
            )
    tokenizer = load_tokenizer(model_args, train_corpus.frame["message"].tolist())
    block_size = data_args.block_size or (128 if model_args.from_scratch else None)
    id2label = train_corpus.id2label
    if not huft_args.regression and id2label is not None and len(id2label) < 2:
        raise ArgumentError(f"{train_corpus.source}: column {data_args.label_column!r} holds one class only "
                            f"({next(iter(id2label.values()), '')!r}): a classifier needs at least two")
    task_fields = dict(
        num_labels=1 if huft_args.regression else len(id2label),
        classification_level="author" if huft_args.task == "author" and huft_args.author_context == "recurrent"
        else "message",
        problem_type="regression" if huft_args.regression else "single_label_classification",
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    if id2label and not huft_args.regression:
        task_fields.update(id2label=id2label, label2id=train_corpus.label2id)
    config = hullama_config(model_args, block_size=block_size or 1024, vocab_size=len(tokenizer), **task_fields)
    if block_size is None:
        block_size = config.block_size = min(1024, config.max_position_embeddings)
    if main_process:
        save_run_args(output_dir, model_args, data_args, huft_args, hub_args, training_args)

    with training_args.main_process_first(desc="blocks"):
        layout = BlockConfig(block_size=block_size, variant=huft_args.author_context, max_blocks=data_args.max_blocks)
        train_data = build_blocks(train_corpus, tokenizer, layout, num_proc=data_args.preprocessing_num_workers,
                                  cache_dir=cache)
        eval_data = build_blocks(held_out, tokenizer, BlockConfig(
            block_size=block_size, variant=huft_args.author_context, max_blocks=data_args.eval_max_blocks),
            cache_dir=cache)
    if len(eval_data.dataset) == 0:
        raise ArgumentError(f"the held-out split has no labelled example ({held_out.source})")
    if main_process:
        print(train_data.report)
    model = load_model(model_args, config, classifier=True, gradient_checkpointing=training_args.gradient_checkpointing)
    if main_process:
        print(training_report(model))
    callbacks = [EarlyStoppingCallback(huft_args.early_stopping_patience)] if huft_args.early_stopping_patience else []
    trainer = HuLMTrainer(
        model=model, args=training_args, train_dataset=train_data.dataset, eval_dataset=eval_data.dataset,
        data_collator=train_data.collator(), processing_class=tokenizer, state_lr_scale=model_args.state_lr_scale,
        compute_metrics=classification_metrics(id2label, huft_args.regression), callbacks=callbacks,
        report_perplexity=False,
    )
    trainer.train(resume_from_checkpoint=resume_point(training_args.resume_from_checkpoint, output_dir))
    metrics = trainer.evaluate()
    results = {"author_context": huft_args.author_context, "task": huft_args.task, "metric": metric,
               "value": metrics[f"eval_{metric}"], "eval": metrics,
               "held_out_labels": eval_data.report.labels_kept, "best_checkpoint": trainer.state.best_model_checkpoint}
    if test is not None:  # the registry task's test split, scored once with the selected checkpoint
        test_data = build_blocks(test, tokenizer, BlockConfig(
            block_size=block_size, variant=huft_args.author_context, max_blocks=data_args.eval_max_blocks),
            cache_dir=cache)
        test_metrics = trainer.evaluate(test_data.dataset, metric_key_prefix="test")
        results.update(task_name=huft_args.task_name, dev_value=results["value"], value=test_metrics[f"test_{metric}"],
                       test=test_metrics, test_labels=test_data.report.labels_kept)
        held_out = test
    if main_process:
        save_output(output_dir / "model", trainer.model, tokenizer, base_model=model_args.base_model)
        (output_dir / "metrics.json").write_text(json.dumps(results, indent=2, default=str))
        write_model_card(
            output_dir / "model", trainer.model, tokenizer, repo_id=hub_model_id or f"local/{output_dir.name}",
            base_model=model_args.base_model,
            kind="classifier", training_args=training_args.to_dict(), data_summary=str(train_data.report),
            eval_rows=[{"task_type": "text-classification", "task_name": f"{huft_args.task}-level "
                        f"({huft_args.author_context} author context)", "dataset_name": held_out.source,
                        "dataset_type": "author-corpus", "metric_type": metric, "metric_name": metric,
                        "metric_value": round(float(results["value"]), 4)}],
        )
        split = "test" if test is not None else "held-out"
        print(f"{split} {metric} ({huft_args.author_context}): {results['value']:.4f} "
              f"on {results.get('test_labels', results['held_out_labels'])} {split} labels")
        if push:
            for repo, url in push_training_output(output_dir / "model", hub_model_id, private=hub_args.hub_private,
                                                  base_repo_id=hub_args.hub_base_model_id).items():
                print(f"pushed {repo}: {url}")
    return results


def registry_splits(huft_args, data_args):
    """(train, dev, test) of a downstream task from eval/tasks.py; no --train_file / --validation_file with it."""
    from hullama.eval.tasks import load_task

    if data_args.train_file or data_args.validation_file or data_args.dataset_name:
        raise ArgumentError("--task_name reads the task's own splits: leave out --train_file, --validation_file and "
                            "--dataset_name")
    try:
        splits = load_task(huft_args.task_name, huft_args.data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ArgumentError(f"--task_name {huft_args.task_name}: {str(e).splitlines()[0]}") from None
    return splits["train"], splits["dev"], splits["test"]


def command() -> None:
    """The `hullama-finetune` console command: `main`, whose results go to --output_dir (a returned value would reach the
    shell as an exit status)."""
    main()


if __name__ == "__main__":
    command()
