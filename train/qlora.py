"""The model for training, in one place: base loading (4-bit, 8-bit or full precision), the HuLlama config,
LoRA on the Llama linear layers, the HuLlama modules and head trained fully, and a report of what trains.

From scratch (no base), a small HuLlama is built and trained in full: LoRA on random weights would learn little.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoConfig, BitsAndBytesConfig, PreTrainedTokenizerBase

from configuration_hullama import HuLlamaConfig
from hullama.command_line import ArgumentError
from hullama.train.args import ModelArguments
from modeling_hullama import HuLlamaForCausalLM, HuLlamaForSequenceClassification, keep_cpu_4bit_weights_unpacked

LLAMA_MODEL_TYPES = ("llama", "hullama")
# A folder holding any of these holds a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# What peft trains in full and saves with the adapter: the author state modules and the classification head.
FULLY_TRAINED_MODULES = ("author_state", "score")


def resolve_compute_dtype(name: str) -> torch.dtype:
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def quantization_config(model_args: ModelArguments) -> BitsAndBytesConfig | None:
    kind = model_args.resolved_quantization
    if kind == "none":
        return None
    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(FULLY_TRAINED_MODULES))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=model_args.double_quantization,
        bnb_4bit_compute_dtype=resolve_compute_dtype(model_args.compute_dtype),
        # Under FSDP the 4-bit weights are stored in a float dtype so that FSDP can shard them like the others.
        bnb_4bit_quant_storage=resolve_compute_dtype(model_args.compute_dtype) if _under_fsdp() else torch.uint8,
    )


def _under_fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def adapter_base(adapter: str) -> str:
    """The base model an adapter folder or Hub repo was trained on."""
    from peft import PeftConfig

    return PeftConfig.from_pretrained(adapter).base_model_name_or_path


def hullama_config(model_args: ModelArguments, *, block_size: int, vocab_size: int | None = None,
                   **task_fields) -> HuLlamaConfig:
    """The HuLlama config for the base (a Llama or HuLlama checkpoint), or a small one from scratch."""
    fields = dict(block_size=block_size, **model_args.hullama_overrides(), **task_fields)
    if model_args.from_scratch:
        hidden = model_args.scratch_hidden_size
        return checked_config(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4,
            num_hidden_layers=model_args.scratch_layers, num_attention_heads=model_args.scratch_heads,
            max_position_embeddings=max(block_size, 128), tie_word_embeddings=True, **fields,
        )
    base = read_base_config(model_args.base_model, trust_remote_code=model_args.trust_remote_code)
    if block_size > base.max_position_embeddings:
        raise ArgumentError(f"--block_size {block_size} exceeds the base's max_position_embeddings "
                            f"({base.max_position_embeddings})")
    base_fields = {k: v for k, v in base.to_dict().items()
                   if k not in ("model_type", "architectures", "auto_map", "transformers_version")}
    base_fields.update(fields)
    return checked_config(**base_fields)


def checked_config(**fields) -> HuLlamaConfig:
    """A HuLlamaConfig, its validation errors (an insertion layer past the depth, heads that do not divide the
    hidden size, ...) as one-line argument errors."""
    try:
        return HuLlamaConfig(**fields)
    except (ValueError, TypeError) as error:
        reasons = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ArgumentError(f"invalid model settings: {reasons[-1] if reasons else error}") from None


def read_base_config(base_model: str, *, trust_remote_code: bool = False):
    """The base's config, without running code from the folder or repo: a HuLlama config is this package's own
    class, a Llama one transformers'; code a config names in its auto_map runs only with --trust_remote_code."""
    from transformers import PretrainedConfig

    try:
        values, _ = PretrainedConfig.get_config_dict(base_model)
        if values.get("model_type") == "hullama":
            base = HuLlamaConfig.from_pretrained(base_model)
        else:
            base = AutoConfig.from_pretrained(base_model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "trust_remote_code" in str(error):
            reason = "its config names code to run (auto_map); pass --trust_remote_code to run it"
        raise ArgumentError(f"--base_model {base_model}: cannot read its config ({reason})") from None
    if base.model_type not in LLAMA_MODEL_TYPES:
        raise ArgumentError(f"--base_model {base_model} is a {base.model_type!r} model: HuLlama needs a "
                            "Llama-architecture base (model_type 'llama')")
    return base


def _device_map(quantized: bool):
    # Quantized weights must be placed at load time; each process of a multi-GPU run takes its own GPU.
    if quantized and torch.cuda.is_available():
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return None


def load_model(model_args: ModelArguments, config: HuLlamaConfig, *, classifier: bool = False,
               gradient_checkpointing: bool = False):
    """The training model: full HuLlama from scratch, or base + LoRA (+ the adapter to start from)."""
    model_class = HuLlamaForSequenceClassification if classifier else HuLlamaForCausalLM
    if model_args.from_scratch:
        torch.manual_seed(0)  # every variant starts from the same weights
        model = model_class(config)
        if gradient_checkpointing:
            model.activation_checkpointing_enable()
        return model

    import peft

    quantization = quantization_config(model_args)
    dtype = resolve_compute_dtype(model_args.compute_dtype) if quantization else torch.float32
    if model_args.compute_dtype != "auto" and not quantization:
        dtype = resolve_compute_dtype(model_args.compute_dtype)
    model = model_class.from_pretrained(
        model_args.base_model, config=config, quantization_config=quantization, dtype=dtype,
        device_map=_device_map(quantization is not None),
    )
    if quantization is not None:
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.activation_checkpointing_enable()
        model.enable_input_require_grads()
    lora = lora_config(model_args, classifier)
    model = peft.get_peft_model(model, lora)
    if model_args.adapter:
        load_adapter_weights(model, model_args.adapter)
    return keep_cpu_4bit_weights_unpacked(model)


def lora_config(model_args: ModelArguments, classifier: bool):
    import peft

    targets = [m.strip() for m in model_args.lora_target_modules.split(",") if m.strip()]
    r, alpha, dropout = model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout
    if model_args.adapter:  # continue with the adapter's own LoRA shape
        saved = json.loads(_adapter_file(model_args.adapter, "adapter_config.json").read_text())
        r, alpha, targets = saved["r"], saved["lora_alpha"], saved["target_modules"]
    return peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS if classifier else peft.TaskType.CAUSAL_LM,
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
        modules_to_save=list(FULLY_TRAINED_MODULES if classifier else FULLY_TRAINED_MODULES[:1]),
    )


def _adapter_file(adapter: str, name: str) -> Path:
    local = Path(adapter) / name
    if local.is_file():
        return local
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(adapter, name))


def load_adapter_weights(model, adapter: str) -> None:
    """Start from a HuLM-pre-trained adapter: its LoRA weights and HuLlama modules; a new head stays fresh."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    weights = load_peft_weights(str(_adapter_file(adapter, "adapter_model.safetensors").parent))
    # peft wants every module it saves in full; a head the adapter never had keeps its fresh values
    weights = {**get_peft_model_state_dict(model), **weights}
    result = set_peft_model_state_dict(model, weights)
    unexpected = [k for k in result.unexpected_keys if "score" not in k]
    if unexpected:
        raise ArgumentError(f"--adapter {adapter} does not fit this base: unexpected weights {unexpected[:3]}")


def training_report(model) -> str:
    """Trainable parameters and a dtype census (what is stored in which dtype, and what trains)."""
    total = trainable = 0
    census: Counter = Counter()
    for _, param in model.named_parameters():
        count = param.numel() * (2 if param.dtype == torch.uint8 else 1)  # 4-bit: two weights per byte
        total += count
        trainable += count if param.requires_grad else 0
        census[(str(param.dtype).removeprefix("torch."), "trained" if param.requires_grad else "frozen")] += count
    lines = [f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f} %)"]
    lines += [f"  {dtype:>9} {state:>7}: {count:,}" for (dtype, state), count in sorted(census.items())]
    return "\n".join(lines)


def load_tokenizer(model_args: ModelArguments, training_texts=None) -> PreTrainedTokenizerBase:
    """--tokenizer, else the adapter's, else the base's; from scratch, a byte-level BPE trained on the texts."""
    from hullama.data.tokenizer import auto_tokenizer, train_byte_bpe

    # an adapter is saved with its tokenizer; its HuLlama base folder holds none
    source = model_args.tokenizer or model_args.adapter or model_args.base_model
    if source is None:
        return train_byte_bpe(training_texts, vocab_size=model_args.scratch_vocab_size)
    if Path(source).is_dir() and not any((Path(source) / name).is_file() for name in TOKENIZER_FILES):
        raise ArgumentError(f"{source} holds no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}): pass --tokenizer")
    try:
        tokenizer = auto_tokenizer(source, trust_remote_code=model_args.trust_remote_code)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "trust_remote_code" in str(error):
            reason = "it names code to run (auto_map); pass --trust_remote_code to run it"
        raise ArgumentError(f"cannot load a tokenizer from {source} ({reason})") from None
    if tokenizer.pad_token_id is None:  # Llama 3 has none; padding is always masked, so eos serves
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
