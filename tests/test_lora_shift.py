"""benchmarks/lora_shift.py: a fresh adapter moves nothing; a trained one moves exactly its own layers' weights, by the
relative amount computed by hand, and the hidden states from its first layer on."""

import pytest
import torch

from benchmarks.lora_shift import hidden_shift, weight_shift
from conftest import tiny_hullama_config
from hullama.data.corpus import load_corpus
from hullama.data.synthetic import synthetic_corpus
from modeling_hullama import HuLlamaForCausalLM


def _adapted(tokenizer, *, layer: int | None):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = HuLlamaForCausalLM(tiny_hullama_config(vocab_size=len(tokenizer))).eval()
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["v_proj"],
                                             modules_to_save=["author_state"]))
    if layer is not None:  # "train" one layer's adapter: lora_B starts at zero, so only this layer changes
        with torch.no_grad():
            model.base_model.model.model.layers[layer].self_attn.v_proj.lora_B["default"].weight.normal_(0, 0.2)
    return model.eval()


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "authors.jsonl"
    synthetic_corpus(4, 6, seed=1).to_json(path, orient="records", lines=True)
    return load_corpus(path)


def test_a_fresh_adapter_moves_nothing(tokenizer, corpus):
    model = _adapted(tokenizer, layer=None)
    assert all(v == 0 for v in weight_shift(model).values())
    shifts = hidden_shift(model, tokenizer, corpus, block_size=32, max_blocks=3, batch_size=2)
    assert all(s["hidden"] == 0 and s["cos"] == pytest.approx(1) for s in shifts.values())


def test_a_trained_layer_moves_its_weights_by_the_hand_computed_amount_and_the_states_from_there_on(tokenizer, corpus):
    model = _adapted(tokenizer, layer=1)
    v = model.base_model.model.model.layers[1].self_attn.v_proj
    with torch.no_grad():  # scale = lora_alpha / r = 2
        hand = float((v.lora_B["default"].weight @ v.lora_A["default"].weight * 2).norm() / v.base_layer.weight.norm())
    weights = weight_shift(model)
    assert weights[2] == pytest.approx(hand, rel=1e-5) and hand > 0  # decoder layer 1 is hidden_states index 2
    assert all(w == 0 for layer, w in weights.items() if layer != 2)
    shifts = hidden_shift(model, tokenizer, corpus, block_size=32, max_blocks=3, batch_size=2)
    assert shifts[0]["hidden"] == shifts[1]["hidden"] == 0  # the embeddings and decoder layer 0 come before it
    assert all(shifts[layer]["hidden"] > 0 and shifts[layer]["cos"] < 1 for layer in range(2, len(shifts)))


def test_the_command_compares_saved_adapters_and_refuses_a_folder_without_one(tokenizer, tmp_path, capsys):
    from benchmarks.lora_shift import main

    base = tmp_path / "base"
    model = _adapted(tokenizer, layer=1)
    model.save_pretrained(tmp_path / "trained")
    model.unload().save_pretrained(base)  # the bare HuLlama the adapter was made on
    tokenizer.save_pretrained(base)
    data = tmp_path / "authors.jsonl"
    synthetic_corpus(3, 6, seed=2).to_json(data, orient="records", lines=True)
    results = main(["--model", str(base), "--adapter", f"trained={tmp_path / 'trained'}", "--data", str(data),
                    "--block_size", "32", "--output", str(tmp_path / "shift.json")])
    assert results["trained"]["2"]["weight"] > 0 and results["trained"]["1"]["hidden"] == 0
    assert "| 2 | " in capsys.readouterr().out and (tmp_path / "shift.json").is_file()
    for wrong, message in ((f"x={base}", "no adapter_config.json"), ("trained", "give name=folder")):
        with pytest.raises(SystemExit):
            main(["--model", str(base), "--adapter", wrong, "--data", str(data)])
        assert message in capsys.readouterr().err
