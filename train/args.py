"""Command-line arguments of the training scripts, as dataclasses with help text (HfArgumentParser).

Every script takes its arguments from the command line or from one YAML file (`hulm.py config.yaml`), and writes
the resolved arguments next to its outputs (`run_args.json`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hullama.command_line import ArgumentError
from hullama.data import VARIANTS  # noqa: F401 - the training scripts' choices

QUANTIZATIONS = ("nf4", "int8", "none")
DATA_CACHES = ("hf_home", "output_dir", "off")
AUTHOR_DRAWS = ("uniform", "remaining")  # how the streaming schedule draws a step's authors (train/schedule.py)
LABEL_ALIASES = ("none", "semeval_sentiment")  # canonical class names for fine-tuning (huft.py)
LLAMA_LINEAR_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


class _ArgumentsParser(HfArgumentParser):
    """HfArgumentParser whose parse errors (a bad value, a missing value) are ArgumentErrors: one line."""

    def error(self, message: str):
        raise ArgumentError(message)


@dataclass
class ModelArguments:
    base_model: str | None = field(
        default=None,
        metadata={"help": "Llama-architecture base: a local path or a Hub id (e.g. meta-llama/Meta-Llama-3-8B), or a "
                          "HuLlama repo / HuLM-pre-trained output. Default: a small HuLlama built from scratch. "
                          "Also --model_name_or_path, as in transformers' examples.",
                  "aliases": ["--model_name_or_path"]},
    )
    adapter: str | None = field(
        default=None, metadata={"help": "A HuLM-pre-trained adapter (output folder or Hub id) to start from."}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Tokenizer path or id. Default: the base's; from scratch, a byte-level BPE trained on the "
                          "training corpus."},
    )
    quantization: str | None = field(
        default=None, metadata={"help": "nf4 | int8 | none. Default: nf4 with a base model, none from scratch."}
    )
    double_quantization: bool = field(default=True, metadata={"help": "Quantize the 4-bit quantization constants."})
    compute_dtype: str = field(
        default="auto", metadata={"help": "auto | bfloat16 | float16 | float32. auto: bfloat16 where supported."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default=LLAMA_LINEAR_MODULES,
        metadata={"help": "Comma-separated Llama linear layers that get LoRA (never the HuLlama modules, which are "
                          "trained fully)."},
    )
    state_lr_scale: float = field(
        default=1.0, metadata={"help": "Learning rate of the HuLlama modules (and head) relative to the LoRA weights."}
    )
    insert_layer: int | None = field(default=None, metadata={"help": "HuLlama insertion layer (default: depth // 2)."})
    extract_layer: int | None = field(default=None, metadata={"help": "HuLlama extraction layer (default: insert_layer - 1)."})
    state_mechanism: str | None = field(default=None, metadata={"help": "How the state enters (see HuLlamaConfig)."})
    detach_state_every: int | None = field(
        default=None, metadata={"help": "Truncated backpropagation: detach the state every k blocks (0: never)."}
    )
    state_pooling: str | None = field(
        default=None, metadata={"help": "Block summary that updates the state: last (real token) or mean (over the "
                                        "block's real tokens); see benchmarks/state_diversity.py."}
    )
    normalize_state_update: bool | None = field(
        default=None, metadata={"help": "RMS-normalise the recurrence's tanh input, so that trained recurrence weights "
                                        "cannot saturate the state (see HuLlamaConfig)."}
    )
    scratch_hidden_size: int = field(default=256, metadata={"help": "From scratch: hidden size."})
    scratch_layers: int = field(default=4, metadata={"help": "From scratch: number of layers."})
    scratch_heads: int = field(default=4, metadata={"help": "From scratch: attention heads."})
    scratch_vocab_size: int = field(default=4096, metadata={"help": "From scratch: BPE vocabulary size."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run code that --base_model, --adapter or --tokenizer ships (auto_map). HuLlama's own "
                          "classes never need it: they come from this package, not from the folder or repo."},
    )

    def __post_init__(self):
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ArgumentError(
                f"--quantization {self.quantization!r} is unknown: choose one of {', '.join(QUANTIZATIONS)}"
            )
        if self.compute_dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ArgumentError(f"--compute_dtype {self.compute_dtype!r} is unknown: auto, bfloat16, float16 or float32")
        for name in ("lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise ArgumentError(f"--{name} {getattr(self, name)} is invalid: it must be at least 1")
        if not 0 <= self.lora_dropout < 1:
            raise ArgumentError(f"--lora_dropout {self.lora_dropout} is invalid: it must be in [0, 1)")
        if self.state_lr_scale <= 0:
            raise ArgumentError(f"--state_lr_scale {self.state_lr_scale} is invalid: it must be > 0")
        if self.base_model is None and self.adapter is None and self.quantization in ("nf4", "int8"):  # an adapter names its base
            raise ArgumentError("--quantization needs --base_model: a model built from scratch is trained in full")
        # imported here, not at the top: the model code imports torch, which --help does not need
        from configuration_hullama import STATE_MECHANISMS, STATE_POOLINGS
        from hullama.data.tokenizer import MIN_VOCAB_SIZE

        if self.state_mechanism is not None and self.state_mechanism not in STATE_MECHANISMS:
            raise ArgumentError(f"--state_mechanism {self.state_mechanism!r} is unknown: choose one of "
                                f"{', '.join(STATE_MECHANISMS)}")
        if self.state_pooling is not None and self.state_pooling not in STATE_POOLINGS:
            raise ArgumentError(f"--state_pooling {self.state_pooling!r} is unknown: choose one of "
                                f"{', '.join(STATE_POOLINGS)}")
        for name in ("scratch_hidden_size", "scratch_layers", "scratch_heads"):
            if getattr(self, name) < 1:
                raise ArgumentError(f"--{name} {getattr(self, name)} is invalid: it must be at least 1")
        if self.scratch_vocab_size < MIN_VOCAB_SIZE:
            raise ArgumentError(f"--scratch_vocab_size {self.scratch_vocab_size} is invalid: a byte-level BPE needs at "
                                f"least {MIN_VOCAB_SIZE} tokens (the 256 bytes, the separator and padding)")
        if self.scratch_hidden_size % self.scratch_heads:
            raise ArgumentError(f"--scratch_heads {self.scratch_heads} must divide --scratch_hidden_size "
                                f"{self.scratch_hidden_size}")
        for name in ("insert_layer", "extract_layer"):
            value = getattr(self, name)
            if value is not None and (value < 0 or (self.from_scratch and value >= self.scratch_layers)):
                depth = f"0 to {self.scratch_layers - 1} (--scratch_layers {self.scratch_layers})" if self.from_scratch \
                    else "a layer of the base (0 or more)"
                raise ArgumentError(f"--{name} {value} is invalid: it must be {depth}")
        if self.detach_state_every is not None and self.detach_state_every < 0:
            raise ArgumentError(f"--detach_state_every {self.detach_state_every} is invalid: 0 (never) or at least 1")

    @property
    def from_scratch(self) -> bool:
        return self.base_model is None

    @property
    def resolved_quantization(self) -> str:
        return self.quantization or ("none" if self.from_scratch else "nf4")

    def hullama_overrides(self) -> dict:
        names = ("insert_layer", "extract_layer", "state_mechanism", "detach_state_every", "state_pooling",
                 "normalize_state_update")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def split_paths(value: str | None) -> list[str]:
    """A comma-separated list of files (the data arguments' way of naming several)."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@dataclass
class DataArguments:
    train_file: str | None = field(
        default=None,
        metadata={"help": "Author corpus (CSV, JSON Lines, Parquet or a datasets folder; several as a "
                          "comma-separated list, read as one corpus). Default: the embedded synthetic corpus."},
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Held-out authors (one or a comma-separated list of files). Default: a split "
                                        "of the training authors."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A dataset datasets.load_dataset reads, instead of --train_file: a Hub dataset id "
                          "(user/name, downloaded on request) or a local dataset folder."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    dataset_split: str = field(default="train", metadata={"help": "Split of --dataset_name with the training authors."})
    validation_split: str | None = field(
        default=None, metadata={"help": "Split of --dataset_name with held-out authors. Default: --validation_file, "
                                        "else a split of the training authors."}
    )
    user_column: str = field(default="user_id", metadata={"help": "Author id column."})
    message_column: str = field(default="message", metadata={"help": "Message text column."})
    timestamp_column: str | None = field(default="timestamp", metadata={"help": "Time column ('' for none)."})
    label_column: str | None = field(default="label", metadata={"help": "Label column (fine-tuning)."})
    validation_fraction: float = field(default=0.15, metadata={"help": "Share of authors held out when no "
                                                                       "validation file is given."})
    block_size: int | None = field(default=None, metadata={"help": "Tokens per block (default: 128 from scratch, "
                                                                    "else 1024 or the model's window)."})
    max_blocks: int | None = field(default=8, metadata={"help": "Blocks kept per author (HaRT: 8 for training)."})
    eval_max_blocks: int | None = field(default=None, metadata={"help": "Blocks kept per held-out author "
                                                                        "(default: all)."})
    synthetic_authors: int = field(default=200, metadata={"help": "Synthetic corpus: number of authors."})
    synthetic_messages: int = field(default=40, metadata={"help": "Synthetic corpus: messages per author."})
    max_eval_authors: int | None = field(default=None, metadata={"help": "Cap on held-out authors scored."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    data_cache: str = field(
        default="hf_home",
        metadata={"help": "Where the tokenised author streams are cached (they hold the corpus's text as token ids): "
                          "hf_home (datasets' cache under HF_HOME, reused by later runs), output_dir (inside "
                          "--output_dir/data_cache) or off (in memory only)."},
    )

    def __post_init__(self):
        for name in ("train_file", "validation_file"):
            paths = split_paths(getattr(self, name))
            for path in paths:
                if not Path(path).exists():  # URLs too: corpora are read from local files and folders
                    raise ArgumentError(f"--{name} {path}: no such file or folder")
            repeated = sorted({p for p in paths if [Path(q).resolve() for q in paths].count(Path(p).resolve()) > 1})
            if repeated:
                raise ArgumentError(f"--{name} names {repeated[0]} more than once: its messages would count twice")
        shared = {Path(p).resolve() for p in split_paths(self.train_file)} & {
            Path(p).resolve() for p in split_paths(self.validation_file)}
        if shared:
            raise ArgumentError(f"--validation_file {sorted(shared)[0].name} is also a --train_file: held-out authors "
                                "must not be training authors")
        if self.dataset_name and self.train_file:
            raise ArgumentError("--dataset_name and --train_file both name the training corpus: give one")
        for name in ("dataset_config_name", "validation_split"):
            if getattr(self, name) and not self.dataset_name:
                raise ArgumentError(f"--{name} belongs to --dataset_name, which is not given")
        if self.validation_split and self.validation_file:
            raise ArgumentError("--validation_split and --validation_file both name the held-out authors: give one")
        if self.validation_split and self.validation_split == self.dataset_split:
            raise ArgumentError(f"--validation_split {self.validation_split} is also the --dataset_split: held-out "
                                "authors must not be training authors")
        if not 0 < self.validation_fraction < 1:
            raise ArgumentError(f"--validation_fraction {self.validation_fraction} must be in (0, 1)")
        if self.block_size is not None and self.block_size < 2:
            raise ArgumentError(f"--block_size {self.block_size} is invalid: it must be at least 2")
        for name in ("max_blocks", "eval_max_blocks", "max_eval_authors", "synthetic_messages",
                     "preprocessing_num_workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ArgumentError(f"--{name} {value} is invalid: it must be at least 1")
        if self.data_cache not in DATA_CACHES:
            raise ArgumentError(f"--data_cache {self.data_cache!r} is unknown: choose one of {', '.join(DATA_CACHES)}")
        if self.synthetic_authors < 2:
            raise ArgumentError(f"--synthetic_authors {self.synthetic_authors} is invalid: training and held-out "
                                "authors need at least 2")


    def cache_dir(self, output_dir: str | Path) -> bool | Path | None:
        """build_blocks' cache_dir for --data_cache: True (datasets' cache), a folder, or None (no cache files)."""
        return {"hf_home": True, "output_dir": Path(output_dir) / "data_cache", "off": None}[self.data_cache]


@dataclass
class HubArguments:
    hub_private: bool = field(
        default=True, metadata={"help": "Create the Hub repo private (author corpora are personal data)."}
    )
    hub_base_model_id: str | None = field(
        default=None,
        metadata={"help": "Where the HuLlama version of the base (base weights + HuLlama code) is pushed for an "
                          "adapter to point at. Default: <hub_model_id>-base."},
    )


@dataclass
class RunArguments:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh in an --output_dir that holds an earlier run, replacing its model, card, "
                          "results and run_args.json. Without it such a folder is refused (resume an interrupted "
                          "run with --resume_from_checkpoint true)."},
    )


def parse_args(argument_classes: tuple, argv: list[str] | None = None):
    """Parse the command line (or a single .yaml/.json file) into the given dataclasses."""
    argv = sys.argv[1:] if argv is None else argv
    # No abbreviations: `--learning_rat 0.1` must be an error, not --learning_rate.
    parser = _ArgumentsParser(argument_classes, allow_abbrev=False)
    if not is_run_file(argv) and any(arg.endswith((".yaml", ".yml", ".json")) and not arg.startswith("-")
                                     for arg in argv[:1]):
        raise ArgumentError(f"a run file ({argv[0]}) takes no other arguments: put them in the file")
    if is_run_file(argv):
        argv = run_file_argv(parser, read_run_file(argv[0]))
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:
        unused = str(error).partition("not used by the HfArgumentParser: ")[2]
        if unused:  # transformers' wording, for an unknown (or abbreviated) flag or run-file key
            raise ArgumentError(f"unknown arguments {unused}: spell every argument out in full (see --help)") from None
        raise


TRAINING_OPTIONS_HELP = """training options:
  Every flag of transformers' TrainingArguments (--learning_rate, --num_train_epochs, --max_steps,
  --per_device_train_batch_size, --gradient_accumulation_steps, --bf16, --gradient_checkpointing, --eval_strategy,
  --save_strategy, --logging_steps, --report_to, --seed, --resume_from_checkpoint, --push_to_hub, --hub_model_id,
  ...), several with HuLlama's own defaults. --help_all lists them all with their defaults (it takes a few seconds:
  transformers imports torch, accelerate and peft for them)."""


def quick_help(argument_classes: tuple, argv: list[str]) -> list[str]:
    """With -h/--help: print the script's own options (these classes import nothing heavy) and a note on the training
    options, and exit. Returns the command line to parse: --help_all becomes the full --help, which lists every
    TrainingArguments flag too."""
    if "--help_all" in argv:
        return [arg if arg != "--help_all" else "--help" for arg in argv]
    if "-h" in argv or "--help" in argv:
        parser = _ArgumentsParser(argument_classes, allow_abbrev=False, epilog=TRAINING_OPTIONS_HELP,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.print_help()
        raise SystemExit(0)
    return argv


def is_run_file(argv: list[str]) -> bool:
    return len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json"))


def run_file_argv(parser: argparse.ArgumentParser, values: dict) -> list[str]:
    """A run file's values as the command line that says the same, so that they are converted and checked exactly as
    flags are (YAML reads `1e-3` as text and `"false"` as a true value; argparse reads both as meant)."""
    argv = []
    for name, value in values.items():
        if value is None:
            continue  # the default
        action = parser._option_string_actions.get(f"--{name}")
        if isinstance(value, (list, tuple)):
            many = action is not None and action.nargs in ("+", "*")
            tokens = [str(v) for v in value] if many else [",".join(str(v) for v in value)]
        elif isinstance(value, dict):
            tokens = [json.dumps(value)]
        elif isinstance(value, bool):
            tokens = ["true" if value else "false"]
        else:
            tokens = [str(value)]
        # `--name=value`: a value that starts with '-' (-.inf, -1) is not taken for a flag
        argv += [f"--{name}", *tokens] if len(tokens) > 1 else [f"--{name}={tokens[0]}"]
    return argv


def read_run_file(path: str) -> dict:
    """The arguments of a YAML (or JSON) run file: a mapping of argument names to values."""
    import yaml  # a superset of JSON

    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ArgumentError(f"{path}: no such run file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ArgumentError(f"{path}: not a readable YAML file ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ArgumentError(f"{path}: expected a mapping of argument names to values, got a {type(values).__name__}")
    return values


def resolved_args(*parsed) -> dict:
    """The resolved arguments of every dataclass, as run_args.json holds them (a script's TrainingArguments subclass
    under "TrainingArguments")."""
    resolved = {}
    for args in parsed:
        if callable(getattr(args, "to_dict", None)):  # transformers' TrainingArguments (a script's subclass)
            resolved["TrainingArguments"] = args.to_dict()
        else:
            resolved[type(args).__name__] = asdict(args)
    return json.loads(json.dumps(resolved, default=str))


def save_run_args(output_dir: str | Path, *parsed) -> Path:
    """The resolved arguments of every dataclass, as JSON next to the outputs."""
    path = Path(output_dir) / "run_args.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(resolved_args(*parsed), indent=2))
    return path


def record_effective_settings(output_dir: str | Path, part: str, settings: dict) -> Path:
    """Add what `part` (a variant) ran with, where the script's defaults or the data decided it, to run_args.json,
    under "effective"."""
    path = Path(output_dir) / "run_args.json"
    saved = json.loads(path.read_text())
    saved.setdefault("effective", {})[part] = settings
    path.write_text(json.dumps(saved, indent=2))
    return path


def explicitly_set(name: str, argv: list[str]) -> bool:
    """Whether the user gave `name` on the command line or in the YAML/JSON file (vs a script default)."""
    if is_run_file(argv):
        return name in read_run_file(argv[0])
    # argparse takes `--learning-rate` for `--learning_rate` too
    return any(arg.startswith("--") and arg[2:].split("=")[0].replace("-", "_") == name for arg in argv)
