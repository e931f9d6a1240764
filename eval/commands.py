"""The evaluation commands: their arguments (dataclasses that HfArgumentParser reads) and their entry points.

Nothing heavy is imported here, so that `--help` appears at once; a command imports its evaluation code (torch, the
model, datasets) only to run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from hullama.command_line import DataclassArgumentParser
from hullama.data import VARIANTS

ZEROED = "recurrent_zeroed_state"  # the ablation scored beside recurrent: the state reset before every block
ALL_VARIANTS = (*VARIANTS, ZEROED)
# How a probe reads a labelled message (eval/features.py).
MESSAGE_CONTEXTS = ("auto", "recurrent", "in_context", "none")
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
# The downstream tasks, in the registry's order (eval/tasks.py defines them and checks this list).
TASK_NAMES = ("stance_abortion", "stance_atheism", "stance_climate", "stance_clinton", "stance_feminism", "sentiment",
              "commit_region", "commit_first_year")
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class PerplexityArguments:
    """hullama-perplexity (eval/perplexity.py): held-out perplexity of the author-context variants on the same tokens;
    writes perplexity.json and perplexity.png to --output_dir."""

    model_name_or_path: str = field(metadata={
        "aliases": ["--model"], "help": "Folder of a HuLlama or Llama checkpoint (config.json); also --model."})
    adapter: str | None = field(default=None, metadata={"help": "Folder of a PEFT adapter to apply on the model."})
    tokenizer: str | None = field(default=None, metadata={"help": "Folder of the tokenizer (default: the model's)."})
    as_hullama: bool = field(default=False, metadata={
        "help": "Load a plain Llama checkpoint into HuLlama classes, so that recurrent can run (state untrained)."})
    data: str = field(default="synthetic", metadata={
        "help": "Corpus file (.jsonl/.csv/.tsv/.parquet) or folder; synthetic (default): the embedded synthetic "
                "corpus's held-out split."})
    dataset_name: str | None = field(default=None, metadata={
        "help": "Instead of --data: a dataset datasets.load_dataset reads (a Hub dataset id, downloaded on request, "
                "or a local dataset folder)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    split: str = field(default="test", metadata={"help": "Split of --dataset_name, or of a saved datasets folder."})
    max_authors: int | None = field(default=None, metadata={"help": "Score only the first N authors (quick runs)."})
    block_size: int | None = field(default=None, metadata={
        "help": "Tokens per block, start token included (default: the model config's block_size, else 256)."})
    context_window: int | None = field(default=None, metadata={
        "help": "Window of none / in_context rows (default: block_size)."})
    max_blocks: int | None = field(default=None, metadata={"help": "Blocks kept per author (default: all)."})
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={
        "choices": ALL_VARIANTS, "help": "Variants to score (default: all three; the zeroed-state ablation is added "
                                         "to recurrent)."})
    no_zeroed_state: bool = field(default=False, metadata={"help": "Skip the zeroed-state ablation."})
    batch_size: int = field(default=4, metadata={"help": "Sequences (authors or rows) per forward pass."})
    blocks_per_forward: int = field(default=16, metadata={
        "help": "Recurrent blocks per forward pass, the state carried between them (bounds memory)."})
    history_buckets: str = field(default="0,256,1024", metadata={
        "help": "Comma-separated lower edges of the preceding-history buckets, in tokens."})
    bootstrap_samples: int = field(default=1000, metadata={"help": "Author resamples for the intervals."})
    seed: int = field(default=0, metadata={"help": "Bootstrap seed."})
    device: str | None = field(default=None, metadata={"help": "cuda, cpu, ... (default: cuda when available)."})
    dtype: str = field(default="auto", metadata={
        "choices": DTYPE_NAMES, "help": "The weights' dtype when loading."})
    output_dir: str = field(default="outputs/perplexity", metadata={
        "help": "Where perplexity.json and perplexity.png are written."})


def perplexity_parser() -> DataclassArgumentParser:
    return DataclassArgumentParser(PerplexityArguments, prog="hullama-perplexity",
                                   description=PerplexityArguments.__doc__.split(":", 1)[1].strip())


@dataclass
class ProbeArguments:
    """hullama-probe (eval/probe.py): linear probes on frozen models over the downstream tasks; writes probe.json and
    probe.md to --output_dir."""

    model_name_or_path: list[str] = field(metadata={
        "aliases": ["--model"], "help": "Folders of HuLlama or Llama checkpoints, all after one flag: the models to "
                                        "compare (also --model)."})
    adapter: list[str] | None = field(default=None, metadata={
        "help": "PEFT adapter folders, or none: one for all models, or one per model in order."})
    as_hullama: list[str] | None = field(default=None, metadata={
        "choices": ["yes", "no"], "help": "Load a plain Llama checkpoint into HuLlama classes (yes/no): one for all "
                                          "models, or one per model in order."})
    name: list[str] | None = field(default=None, metadata={"help": "The models' names in the table, one per model."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "Tokenizer folder for all models (default: each model's folder)."})
    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES), metadata={
        "help": f"Tasks (default: all eight): {', '.join(TASK_NAMES)}."})
    data_dir: str | None = field(default=None, metadata={
        "help": "Folder holding hart/ and commits/ (default: ../shared/data)."})
    layers: list[int] | None = field(default=None, metadata={
        "help": "hidden_states indices the feature search tries (0 the embeddings, i the output of layer i, -1 the "
                "last; default: every layer, or 8 evenly spaced in a deeper model)."})
    message_context: str = field(default="auto", metadata={
        "choices": MESSAGE_CONTEXTS, "help": "How a labelled message is read (auto: recurrent for HuLlama, none "
                                             "otherwise)."})
    folds: int = field(default=5, metadata={"help": "Cross-validation folds over all of a task's authors."})
    inner_folds: int = field(default=3, metadata={
        "help": "Inner folds (over the other folds' authors) that choose the features and the regularisation."})
    bootstrap_samples: int = field(default=1000, metadata={"help": "Author resamples for the 95 %% intervals."})
    reference: str | None = field(default=None, metadata={
        "help": "The model (its --name) every other is compared with (default: the first)."})
    block_size: int | None = field(default=None, metadata={"help": "Tokens per block (default: each model's config)."})
    max_blocks: int | None = field(default=None, metadata={"help": "Blocks kept per author (default: all)."})
    batch_size: int = field(default=4, metadata={"help": "Authors or rows per forward pass."})
    blocks_per_forward: int = field(default=16, metadata={
        "help": "Recurrent blocks per forward pass, the state carried between them (bounds memory)."})
    seed: int = field(default=0, metadata={"help": "Seed of the folds, the logistic regressions and the bootstrap."})
    device: str | None = field(default=None, metadata={"help": "cuda, cpu, ... (default: cuda when available)."})
    dtype: str = field(default="auto", metadata={
        "choices": DTYPE_NAMES, "help": "The weights' dtype when loading."})
    output_dir: str = field(default="outputs/probe", metadata={"help": "Where probe.json and probe.md are written."})


def probe_parser() -> DataclassArgumentParser:
    return DataclassArgumentParser(ProbeArguments, prog="hullama-probe",
                                   description=ProbeArguments.__doc__.split(":", 1)[1].strip())


@dataclass
class TasksArguments:
    """eval/tasks.py: the downstream task registry; prints the authors, messages and label counts of every split."""

    data_dir: str = field(default=str(DEFAULT_DATA_DIR), metadata={
        "help": "Folder holding hart/ and commits/ (default: ../shared/data next to the repository)."})
    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES), metadata={
        "help": f"Tasks to load (default: all): {', '.join(TASK_NAMES)}."})
    json: str | None = field(default=None, metadata={"help": "Also write the summary to this JSON file."})


def tasks_parser() -> DataclassArgumentParser:
    return DataclassArgumentParser(TasksArguments, prog="tasks.py", description=TasksArguments.__doc__.split(":", 1)[1].strip())


def _wants_help(argv: list[str]) -> bool:
    return "-h" in argv or "--help" in argv


def perplexity_command() -> None:
    """The `hullama-perplexity` console command (main's results go to --output_dir, not to the shell)."""
    if _wants_help(sys.argv[1:]):
        perplexity_parser().print_help()
        return
    from hullama.eval.perplexity import main

    main()


def probe_command() -> None:
    """The `hullama-probe` console command."""
    if _wants_help(sys.argv[1:]):
        probe_parser().print_help()
        return
    from hullama.eval.probe import main

    main()
