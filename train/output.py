"""What a training run leaves behind: a folder anyone can load with trust_remote_code.

A full model (trained from scratch): weights, config.json with the complete auto_map, both code files, tokenizer.
An adapter (QLoRA on a base): adapter_config.json (task type set; its base points at a HuLlama base, i.e. the
base's weights next to a HuLlama config and the code, never at a raw Llama repo), adapter_model.safetensors
(LoRA plus the HuLlama modules and head, saved in full), config.json and code files, tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import configuration_hullama
import modeling_hullama
from configuration_hullama import HuLlamaConfig

CODE_FILES = (Path(configuration_hullama.__file__), Path(modeling_hullama.__file__))
# Load-time settings that must not travel with a saved config: a loader would expect pre-quantized weights.
_LOAD_TIME_KEYS = ("quantization_config", "_name_or_path", "transformers_version", "architectures")


def clean_config(config) -> HuLlamaConfig:
    """A HuLlama config without load-time settings, as it should be saved."""
    fields = {k: v for k, v in config.to_dict().items() if k not in _LOAD_TIME_KEYS and k != "model_type"}
    return HuLlamaConfig(**fields)


def copy_code(folder: Path) -> None:
    for path in CODE_FILES:
        shutil.copy(path, folder / path.name)


def save_hullama_base(base_model: str, config, folder: Path) -> Path:
    """The base's weights next to a HuLlama config and the code: what an adapter's base_model_name_or_path names.

    The weight files are hard-linked where possible (no second copy on disk) or copied.
    """
    base_dir = Path(base_model)
    if not base_dir.is_dir():
        from huggingface_hub import snapshot_download

        base_dir = Path(snapshot_download(base_model, allow_patterns=["*.safetensors", "*.safetensors.index.json"]))
    weights = sorted(base_dir.glob("*.safetensors")) + sorted(base_dir.glob("*.safetensors.index.json"))
    if not weights:
        raise FileNotFoundError(f"{base_model} has no safetensors weights to build a HuLlama base from")
    folder.mkdir(parents=True, exist_ok=True)
    for path in weights:
        target = folder / path.name
        target.unlink(missing_ok=True)
        try:
            target.hardlink_to(path.resolve())
        except OSError:
            shutil.copy(path, target)
    base_config = clean_config(config)
    base_config.architectures = ["HuLlamaForCausalLM"]
    base_config.save_pretrained(folder)
    copy_code(folder)
    return folder


def save_output(folder: str | Path, model, tokenizer, *, base_model: str | None = None,
                hullama_base: str | Path | None = None) -> Path:
    """Save a trained model or adapter with everything needed to load it (module docstring)."""
    from peft import PeftModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        inner = model.get_base_model()
        if hullama_base is None and _is_hullama(base_model):
            hullama_base = base_model
        elif hullama_base is None:
            hullama_base = save_hullama_base(base_model, inner.config, folder.parent / "hullama-base")
            # The base repo is pushed too, and loaders of an adapter (pipelines among them) take the tokenizer from
            # the base it names: it holds the training tokenizer as well.
            tokenizer.save_pretrained(hullama_base)
        model.save_pretrained(folder)
        set_adapter_base(folder, str(Path(hullama_base).resolve()) if Path(str(hullama_base)).is_dir() else str(hullama_base))
        config = clean_config(inner.config)
        config.architectures = [type(inner).__name__]
        config.save_pretrained(folder)
    else:
        model.save_pretrained(folder)
    copy_code(folder)
    tokenizer.save_pretrained(folder)
    return folder


def set_adapter_base(folder: Path, base: str) -> None:
    path = Path(folder) / "adapter_config.json"
    adapter_config = json.loads(path.read_text())
    adapter_config["base_model_name_or_path"] = base
    path.write_text(json.dumps(adapter_config, indent=2))


def _is_hullama(base_model: str | None) -> bool:
    """Whether the base is a HuLlama checkpoint, read from its config.json alone (no code from it runs)."""
    if base_model is None:
        return False
    from transformers import PretrainedConfig

    return PretrainedConfig.get_config_dict(base_model)[0].get("model_type") == "hullama"


def write_model_card(folder: str | Path, model, tokenizer, *, repo_id: str | None, base_model: str | None,
                     kind: str, training_args: dict, data_summary, eval_rows: list[dict]) -> Path:
    """README.md (the model card, with widget outputs computed by the model) and the endpoint handler.

    A local base path is not a Hub id, so it is left out of the card's metadata; an unpushed run gets the
    placeholder id local/<folder name>.
    """
    from peft import PeftModel

    from hullama.hub_card import compute_widget_examples, copy_handler, write_card

    folder = Path(folder)
    hub_base = base_model if base_model and not Path(base_model).exists() else None
    model.eval()
    widget = compute_widget_examples(model, tokenizer)
    write_card(folder, repo_id=repo_id or f"local/{folder.name}", base_model=hub_base, kind=kind,
               adapter=isinstance(model, PeftModel), training_args=training_args, data_summary=data_summary,
               eval_results=eval_rows or None, widget=widget,
               classification_level=getattr(model.config, "classification_level", "message"),
               state_mechanism=getattr(model.config, "state_mechanism", "gate"),
               normalize_state_update=getattr(model.config, "normalize_state_update", True))
    copy_handler(folder)
    return folder / "README.md"
