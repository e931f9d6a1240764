"""The contract of a transformers model, checked on HuLlama by our own tests.

transformers' common suite (tests/test_transformers_suite.py) checks these too, but it comes from each release's
sdist and may change; each defect it found in HuLlama is pinned here so that it stays fixed: loading info, attention
and hidden-state outputs (also from the config, also chosen layers), return_dict=False, the float32 modules, the
tensor-parallel plan, RoPE scaling, base-model-prefix loads and mismatched heads.
"""

import pytest
import torch
from torch.testing import assert_close

from conftest import perturb_state_modules, tiny_hullama_config
from modeling_hullama import HuLlamaForCausalLM, HuLlamaForSequenceClassification, HuLlamaModel

CLASSES = [HuLlamaModel, HuLlamaForCausalLM, HuLlamaForSequenceClassification]
# The default layout runs all blocks at once; HaRT's (extract above insert) runs them one after another.
LAYOUTS = {"all_at_once": {}, "in_order": {"insert_layer": 1, "extract_layer": 2}}


def _model(cls=HuLlamaForCausalLM, layout="all_at_once", **fields):
    torch.manual_seed(0)
    config = tiny_hullama_config(num_labels=3, **{**LAYOUTS[layout], **fields})
    return perturb_state_modules(cls(config)).eval()


def _ids(*shape, seed=0):
    return torch.randint(2, 512, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cls", CLASSES)
def test_from_pretrained_returns_loading_info_when_asked(cls, tmp_path):
    _model(cls).save_pretrained(tmp_path)
    model, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, cls)
    assert info["missing_keys"] == set() or info["missing_keys"] == []
    assert not info["unexpected_keys"]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_attentions_are_returned_per_layer_and_per_block(layout):
    model = _model(layout=layout, attn_implementation="eager")
    ids = _ids(2, 3, 10)
    with torch.no_grad():
        out = model(ids, output_attentions=True)
        alone = [model(ids[:, k], author_state=None if k == 0 else out.author_states[:, k - 1],
                       output_attentions=True) for k in range(3)]
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert len(out.attentions) == layers
    for i, weights in enumerate(out.attentions):
        assert weights.shape == (2, 3, heads, 10, 10)
        assert_close(weights.sum(-1), torch.ones(2, 3, heads, 10))  # each query's weights sum to one
        for k in range(3):  # the same as the block run alone from the state it receives
            assert_close(weights[:, k], alone[k].attentions[i])


def test_output_flags_default_to_the_config():
    model = _model(attn_implementation="eager")
    ids = _ids(2, 8)
    with torch.no_grad():
        plain = model(ids)
        model.config.output_hidden_states = model.config.output_attentions = True
        from_config = model(ids)
    assert plain.hidden_states is None and plain.attentions is None
    assert len(from_config.hidden_states) == model.config.num_hidden_layers + 1
    assert len(from_config.attentions) == model.config.num_hidden_layers


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_chosen_hidden_states_equal_those_of_all_and_the_rest_are_none(layout):
    model = _model(layout=layout)
    ids = _ids(2, 3, 8)
    with torch.no_grad():
        every = model(ids, output_hidden_states=True).hidden_states
        chosen = model(ids, output_hidden_states=[0, 2, -1]).hidden_states
    assert len(every) == len(chosen) == model.config.num_hidden_layers + 1
    for i, (full, kept) in enumerate(zip(every, chosen)):
        if i in (0, 2, len(every) - 1):
            assert_close(kept, full)
        else:
            assert kept is None


@pytest.mark.parametrize("cls", CLASSES)
def test_tuple_output_equals_the_dict_output(cls):
    model = _model(cls, attn_implementation="eager")
    ids = _ids(2, 3, 8)
    labels = ids if cls is HuLlamaForCausalLM else None
    kwargs = dict(labels=labels, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        as_tuple = model(ids, return_dict=False, **kwargs)
        as_dict = model(ids, **kwargs)
    assert isinstance(as_tuple, tuple)
    flat_tuple, flat_dict = _flatten(as_tuple), _flatten(as_dict.to_tuple())
    assert len(flat_tuple) == len(flat_dict) and any(t.dtype == torch.bool for t in flat_tuple)  # block_mask
    for a, b in zip(flat_tuple, flat_dict):
        assert torch.equal(a, b)


def _flatten(values):
    flat = []
    for value in values:
        if isinstance(value, (tuple, list)):
            flat += _flatten(value)
        elif isinstance(value, torch.Tensor):
            flat.append(value)
    return flat


@pytest.mark.parametrize("cls", CLASSES)
def test_state_modules_stay_float32_under_half_precision_and_the_rest_follows_the_dtype(cls, tmp_path):
    model = _model(cls)
    assert not (model._keep_in_fp32_modules or set()) & set(model._keep_in_fp32_modules_strict)
    names = dict(model.named_modules())
    for kept in model._keep_in_fp32_modules_strict:  # every name is a module of this class
        assert any(name == kept or name.endswith("." + kept) for name in names), kept
    model.save_pretrained(tmp_path)
    for dtype in (torch.float16, torch.bfloat16):
        loaded = cls.from_pretrained(tmp_path, dtype=dtype)
        for name, param in loaded.named_parameters():
            parts = name.split(".")
            expected = torch.float32 if "author_state" in parts or parts[0] == "score" else dtype
            assert param.dtype == expected, (dtype, name, param.dtype)


def test_the_tensor_parallel_plan_shards_the_tied_head_with_its_embeddings():
    model = _model()
    assert model._tp_plan.get("lm_head") == "colwise_gather_output"
    assert model.config.base_model_tp_plan  # the embeddings and layers, from Llama's config


def test_scaled_rope_runs_blocks_longer_than_max_position_embeddings():
    ids = _ids(1, 2, 96)  # tiny config: max_position_embeddings=64
    with torch.no_grad():
        plain = _model(HuLlamaModel)(ids).last_hidden_state
        scaled = _model(HuLlamaModel, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
        assert scaled.config.rope_parameters["rope_type"] == "linear"
        stretched = scaled(ids).last_hidden_state
    assert stretched.shape == plain.shape and torch.isfinite(stretched).all()
    assert not torch.allclose(stretched, plain)


def test_base_and_head_checkpoints_load_into_each_other(tmp_path):
    causal = _model()
    causal.save_pretrained(tmp_path / "causal")
    base = HuLlamaModel.from_pretrained(tmp_path / "causal")
    for name, param in base.state_dict().items():
        assert torch.equal(param, causal.model.state_dict()[name]), name
    base.save_pretrained(tmp_path / "base")
    head = HuLlamaForCausalLM.from_pretrained(tmp_path / "base")
    for name, param in head.model.state_dict().items():
        assert torch.equal(param, base.state_dict()[name]), name


def test_a_head_of_another_size_is_refused_unless_mismatches_are_ignored(tmp_path):
    _model(HuLlamaForSequenceClassification).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError):
        HuLlamaForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    model = HuLlamaForSequenceClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    with torch.no_grad():
        assert model(_ids(2, 8)).logits.shape == (2, 5)


def test_single_block_outputs_are_the_tensors_the_forward_computed_with():
    model = _model(attn_implementation="eager").train()
    out = model(_ids(2, 8), output_hidden_states=True, output_attentions=True)
    first, weights = out.hidden_states[0], out.attentions[0]
    first.retain_grad()
    weights.retain_grad()
    out.logits.sum().backward()
    assert first.grad is not None and weights.grad is not None


def test_a_llama_loads_into_hullama_without_mismatch_or_missing_weight_warnings(tiny_llama_dir, caplog, capsys):
    """Loading a Llama into HuLlama classes is the documented way in: the new modules start at their initial values,
    which is no missing-weights report and no model-type warning (an adapter's HuLlama base loads the same way)."""
    from transformers.utils import logging

    logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            model = HuLlamaForCausalLM.from_pretrained(tiny_llama_dir)
    finally:
        logging.disable_propagation()
    said = caplog.text + capsys.readouterr().err
    assert "to instantiate a model of type" not in said and "MISSING" not in said, said
    assert model.config.model_type == "hullama" and torch.equal(model.model.author_state.initial_state,
                                                                torch.zeros_like(model.model.author_state.initial_state))
