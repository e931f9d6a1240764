"""Command-line arguments of the training scripts, as dataclasses with help text (HfArgumentParser).

Every script takes its arguments from the command line or from one YAML file (`hulm.py config.yaml`), and writes
the resolved arguments next to its outputs (`run_args.json`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments

QUANTIZATIONS = ("nf4", "int8", "none")
VARIANTS = ("recurrent", "in_context", "none")
LLAMA_LINEAR_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


class ArgumentError(ValueError):
    """A bad argument: the scripts print it as one line and exit with status 2."""


@dataclass
class ModelArguments:
    base_model: str | None = field(
        default=None,
        metadata={"help": "Llama-architecture base: a local path or a Hub id (e.g. meta-llama/Meta-Llama-3-8B), or a "
                          "HuLlama repo / HuLM-pre-trained output. Default: a small HuLlama built from scratch."},
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

    def __post_init__(self):
        for name in ("train_file", "validation_file"):
            for path in split_paths(getattr(self, name)):
                if "://" not in path and not Path(path).exists():
                    raise ArgumentError(f"--{name} {path}: no such file or folder")
        if not 0 < self.validation_fraction < 1:
            raise ArgumentError(f"--validation_fraction {self.validation_fraction} must be in (0, 1)")
        if self.block_size is not None and self.block_size < 2:
            raise ArgumentError(f"--block_size {self.block_size} is invalid: it must be at least 2")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise ArgumentError(f"--max_blocks {self.max_blocks} is invalid: it must be at least 1")


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


def parse_args(argument_classes: tuple, argv: list[str] | None = None, defaults: dict | None = None):
    """Parse the command line (or a single .yaml/.json file) into the given dataclasses.

    `defaults` overrides TrainingArguments' library defaults with the script's own (an explicit flag still wins).
    """
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(argument_classes)
    if defaults:
        parser.set_defaults(**defaults)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        import yaml  # a superset of JSON

        values = yaml.safe_load(Path(argv[0]).read_text()) or {}
        return parser.parse_dict({**(defaults or {}), **values})
    return parser.parse_args_into_dataclasses(args=argv)


def save_run_args(output_dir: str | Path, *parsed) -> Path:
    """The resolved arguments of every dataclass, as JSON next to the outputs."""
    resolved = {}
    for args in parsed:
        values = args.to_dict() if isinstance(args, TrainingArguments) else asdict(args)
        resolved[type(args).__name__] = values
    path = Path(output_dir) / "run_args.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(resolved, indent=2, default=str))
    return path


def explicitly_set(name: str, argv: list[str]) -> bool:
    """Whether the user gave `name` on the command line or in the YAML/JSON file (vs a script default)."""
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        import yaml

        return name in (yaml.safe_load(Path(argv[0]).read_text()) or {})
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in argv)
