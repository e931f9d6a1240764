"""The three ways the state enters the model (query offset, tanh-gated residual, gated memory slots), the knobs of
the recurrence, the diagnostics on every output, and the zeroed-state ablation switch."""

import math

import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaForCausalLM

from conftest import perturb_state_modules, tiny_hullama_config
from modeling_hullama import CACHE_NAME, HuLlamaForCausalLM, HuLlamaForSequenceClassification

MECHANISMS = ["query", "gate", "memory"]
# The parameters through which the state enters, per mechanism; they add exactly zero at initialisation.
ENTRY = {"query": ["state_to_query.weight"], "gate": ["state_to_residual.weight", "residual_gate.alpha"],
         "memory": ["state_to_memory_keys.weight", "state_to_memory_values.weight", "memory_gate.alpha"]}
# The zero-initialised parameter that gets a gradient at once (a zero gate in front of a random projection).
OPENS_FIRST = {"query": "state_to_query.weight", "gate": "residual_gate.alpha", "memory": "memory_gate.alpha"}

mechanisms = pytest.mark.parametrize("mechanism", MECHANISMS)


def _ids(*shape, seed=0):
    return torch.randint(2, 512, shape, generator=torch.Generator().manual_seed(seed))


def _model(mechanism, perturb=True, **fields):
    torch.manual_seed(0)
    model = HuLlamaForCausalLM(tiny_hullama_config(state_mechanism=mechanism, **fields))
    return (perturb_state_modules(model) if perturb else model).eval()


def _state(batch, seed=5):
    return torch.randn(batch, 64, generator=torch.Generator().manual_seed(seed))


@mechanisms
def test_parameters_of_each_mechanism(mechanism):
    model = _model(mechanism, perturb=False, state_memory_tokens=3)
    names = {n for n, _ in model.model.author_state.named_parameters()}
    assert names == {"initial_state", "summary_norm.weight", "state_to_state.weight", "state_to_state.bias",
                     "summary_to_state.weight", "summary_to_state.bias", "update_norm.weight", *ENTRY[mechanism]}
    if mechanism == "memory":  # 3 slots x 2 key-value heads x head_dim 16
        assert model.model.author_state.state_to_memory_keys.out_features == 3 * 2 * 16
        assert model.model.author_state.memory_gate.alpha.shape == (4,)  # one gate per attention head


@pytest.mark.parametrize("mechanism, fields", [("query", {}), ("gate", {}), ("memory", {}),
                                               ("gate", {"normalize_injected_state": True}),
                                               ("memory", {"normalize_injected_state": True}),
                                               ("gate", {"normalize_state_update": False})])
def test_llama_parity_at_initialisation(tiny_llama_dir, mechanism, fields):
    llama = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    hullama = HuLlamaForCausalLM.from_pretrained(tiny_llama_dir, state_mechanism=mechanism, **fields).eval()
    assert hullama.config.state_mechanism == mechanism
    single, blocks = _ids(3, 14), _ids(2, 3, 12, seed=1)
    mask = torch.ones_like(single)
    mask[1, 10:] = 0  # right padding
    with torch.no_grad():
        assert_close(hullama(single, attention_mask=mask).logits, llama(single, attention_mask=mask).logits)
        expected = llama(blocks.view(6, 12)).logits.view(2, 3, 12, -1)
        out = hullama(blocks)
        assert_close(out.logits, expected)  # blocks 2 and 3 read a non-zero state
        assert out.author_states[:, :2].abs().sum() > 0
        assert_close(hullama(blocks, author_state=_state(2)).logits, expected)  # any state: still exactly Llama
    assert (out.injection_norm == 0).all()


@pytest.mark.parametrize("normalize_state_update", [False, True])
def test_normalised_update_keeps_large_recurrence_weights_out_of_saturation(normalize_state_update):
    """Trained recurrence weights grow (Adam moves every weight by about the learning rate a step); the tanh input's
    RMSNorm makes the state's scale independent of theirs."""
    model = _model("gate", perturb=False, normalize_state_update=normalize_state_update)
    with torch.no_grad():
        for linear in (model.model.author_state.state_to_state, model.model.author_state.summary_to_state):
            linear.weight.mul_(20)
        states = model(_ids(2, 6, 12)).author_states
    saturation = states.abs().mean().item()
    assert (saturation < 0.75) if normalize_state_update else (saturation > 0.9)


@mechanisms
def test_state_matters_after_training(mechanism):
    model = _model(mechanism)
    ids = _ids(2, 3, 12)
    with torch.no_grad():
        carried, given = model(ids), model(ids, author_state=_state(2))
    assert not torch.allclose(carried.logits[:, 1:], given.logits[:, 1:])
    assert not torch.allclose(carried.logits[:, 0], given.logits[:, 0])


@mechanisms
def test_gradients_reach_the_state_modules(mechanism):
    ids = _ids(2, 3, 12)
    fresh = _model(mechanism, perturb=False).train()
    fresh(ids, labels=ids).loss.backward()
    params = dict(fresh.model.author_state.named_parameters())
    assert params[OPENS_FIRST[mechanism]].grad.abs().sum() > 0  # the closed path can open
    trained = _model(mechanism).train()
    trained(ids, labels=ids).loss.backward()
    for name, param in trained.model.author_state.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@mechanisms
def test_gradient_checkpointing_gives_the_same_gradients(mechanism):
    model = _model(mechanism).train()
    ids = _ids(2, 3, 12)
    start = _state(2).requires_grad_()

    def grads():
        model.zero_grad()
        start.grad = None
        model(ids, labels=ids, author_state=start).loss.backward()
        return {"start": start.grad.clone(), **{n: p.grad.clone() for n, p in model.named_parameters()
                                                  if p.grad is not None}}

    plain = grads()
    model.activation_checkpointing_enable()
    checkpointed = grads()
    assert plain["start"].abs().sum() > 0 and plain.keys() == checkpointed.keys()
    for name in plain:
        assert_close(checkpointed[name], plain[name], msg=name)


@mechanisms
def test_all_padding_block_carries_the_state(mechanism):
    model = _model(mechanism)
    ids = _ids(2, 3, 12)
    mask = torch.ones_like(ids)
    mask[0, 1] = 0
    mask[1, 2, 5:] = 0
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
        alone = model(ids[1:], attention_mask=mask[1:])
    assert torch.equal(out.author_states[0, 1], out.author_states[0, 0])
    assert not torch.equal(out.author_states[0, 2], out.author_states[0, 1])
    real = mask[1].bool()
    assert_close(out.logits[1][real], alone.logits[0][real])
    assert torch.isfinite(out.logits).all()


@mechanisms
def test_cached_generation_matches_uncached_forward(mechanism):
    model = _model(mechanism)
    prompt = _ids(2, 6)
    mask = torch.ones_like(prompt)
    prompt[0, :2], mask[0, :2] = 1, 0  # left padding
    states = _state(2) * 3
    full_mask = torch.cat([mask, torch.ones(2, 6, dtype=torch.long)], 1)
    generated = {}
    for name, state, ablate in (("initial", None, False), ("given", states, False), ("ablated", states, True)):
        out = model.generate(prompt, attention_mask=mask, author_state=state, ablate_state=ablate, max_new_tokens=6,
                             do_sample=False, pad_token_id=1)
        with torch.no_grad():
            logits = model(out, attention_mask=full_mask, author_state=state, ablate_state=ablate,
                           use_cache=False).logits
        assert torch.equal(logits[:, 5:-1].argmax(-1), out[:, 6:]), name
        generated[name] = out
    assert not torch.equal(generated["initial"], generated["given"])
    assert torch.equal(generated["ablated"], generated["initial"])  # one block: the ablated state is U0


@mechanisms
def test_ablation_injects_the_initial_state_into_every_block(mechanism):
    model = _model(mechanism)
    ids = _ids(2, 3, 12)
    mask = torch.ones_like(ids)
    mask[1, 1, 7:] = 0
    start = _state(2)
    with torch.no_grad():
        plain = model(ids, attention_mask=mask, author_state=start)
        assert_close(model(ids, attention_mask=mask, author_state=start, ablate_state=False).logits, plain.logits)
        ablated = model(ids, attention_mask=mask, author_state=start, ablate_state=True)
        state = start
        for k in range(3):
            alone = model(ids[:, k], attention_mask=mask[:, k])  # block k alone, from U0
            real = mask[:, k].bool()
            assert_close(ablated.logits[:, k][real], alone.logits[real])
            # the recurrence still runs from the carried state, on what the ablated blocks extract
            state = model(ids[:, k], attention_mask=mask[:, k], author_state=state, ablate_state=True).final_author_state
            assert_close(ablated.author_states[:, k], state)
    assert not torch.allclose(ablated.logits, plain.logits)
    assert ablated.final_author_state is not None and ablated.state_abs_mean is not None


@mechanisms
def test_diagnostics(mechanism):
    ids = _ids(2, 3, 12)
    mask = torch.ones_like(ids)
    mask[0, 2] = 0  # a padding block: its repeated state is not counted
    mask[1, 1, 4:] = 0
    with torch.no_grad():
        fresh = _model(mechanism, perturb=False)(ids, attention_mask=mask)
        model = _model(mechanism)
        out = model(ids, attention_mask=mask)
    assert (fresh.injection_norm == 0).all() and ((0 < fresh.state_abs_mean) & (fresh.state_abs_mean < 1)).all()
    assert (out.injection_norm > 0).all() and ((0 < out.state_abs_mean) & (out.state_abs_mean < 1)).all()
    # one value per row (author), detached
    assert not out.state_abs_mean.requires_grad and out.state_abs_mean.shape == out.injection_norm.shape == (2,)
    real_blocks = mask.bool().any(-1)
    assert_close(out.state_abs_mean, torch.stack([out.author_states[i][real_blocks[i]].abs().mean() for i in range(2)]))
    # injection_norm: the mean over real tokens of the norm of what the state adds at the insertion point
    entering = torch.cat([model.model.author_state.initial_states(2).unsqueeze(1), out.author_states[:, :-1]], 1)
    state = model.model.author_state
    if mechanism == "query":
        added = state.state_to_query(entering).norm(dim=-1)  # [B, K]
    elif mechanism == "gate":
        added = (state.residual_gate() * state.state_to_residual(entering)).norm(dim=-1)
    if mechanism != "memory":
        real = mask.sum(-1).float()  # [B, K] real tokens per block
        assert_close(out.injection_norm, (added * real).sum(-1) / real.sum(-1))
    else:  # the gated read added before o_proj: the difference it makes to o_proj's input
        inputs = []
        o_proj = model.model.layers[model.config.insert_layer].self_attn.o_proj
        hook = o_proj.register_forward_hook(lambda module, args, output: inputs.append(args[0]))
        single, single_mask, start = ids[:, 0], mask[:, 1], _state(2)
        with torch.no_grad():
            with_memory = model(single, attention_mask=single_mask, author_state=start).injection_norm
            state.memory_gate.alpha.zero_()
            model(single, attention_mask=single_mask, author_state=start)
        hook.remove()
        per_token = (inputs[0] - inputs[1]).norm(dim=-1)
        real = single_mask.float()
        assert_close(with_memory, (per_token * real).sum(-1) / real.sum(-1))


def test_diagnostics_in_cached_decoding_and_on_the_classifier():
    model = _model("memory")
    ids = _ids(2, 5)
    with torch.no_grad():
        first = model(ids, use_cache=True)
        step = model(_ids(2, 1, seed=3), past_key_values=getattr(first, CACHE_NAME),
                     attention_mask=torch.ones(2, 6, dtype=torch.long))
    assert step.state_abs_mean is None and step.author_states is None  # no block is completed
    assert (step.injection_norm > 0).all()
    torch.manual_seed(0)
    classifier = perturb_state_modules(HuLlamaForSequenceClassification(
        tiny_hullama_config(state_mechanism="gate", num_labels=3))).eval()
    with torch.no_grad():
        out = classifier(_ids(2, 3, 10))
        ablated = classifier(_ids(2, 3, 10), ablate_state=True)
    assert ((0 < out.state_abs_mean) & (out.state_abs_mean < 1)).all() and (out.injection_norm > 0).all()
    assert not torch.allclose(out.logits[:, 1:], ablated.logits[:, 1:])
    assert_close(out.logits[:, 0], ablated.logits[:, 0])  # the first block reads U0 either way


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_recurrence_initialisation_scale(scale):
    torch.manual_seed(0)
    model = HuLlamaForCausalLM(tiny_hullama_config(hidden_size=128, state_size=96, state_init_scale=scale))
    state = model.model.author_state
    for linear in (state.state_to_state, state.summary_to_state):
        expected = scale / math.sqrt(linear.in_features)
        assert abs(linear.weight.std().item() / expected - 1) < 0.1
        assert torch.count_nonzero(linear.bias) == 0


def test_default_initialisation_does_not_saturate_the_state():
    torch.manual_seed(0)
    model = HuLlamaForCausalLM(tiny_hullama_config(hidden_size=128, intermediate_size=64)).eval()
    with torch.no_grad():
        out = model(_ids(4, 6, 16))
    assert 0.4 < out.state_abs_mean.mean() < 0.8  # std of the tanh input O(1): |U| about 0.6, not 1


@pytest.mark.parametrize("mechanism", ["gate", "memory"])
def test_4bit_base_keeps_the_mechanism_float32_and_trainable_under_peft(tmp_path, mechanism):
    pytest.importorskip("bitsandbytes")
    peft = pytest.importorskip("peft")
    from bitsandbytes.nn import Linear4bit
    from transformers import BitsAndBytesConfig

    _model(mechanism, perturb=False).save_pretrained(tmp_path)
    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = HuLlamaForCausalLM.from_pretrained(tmp_path, quantization_config=nf4, dtype=torch.bfloat16)
    assert isinstance(model.model.layers[model.config.insert_layer].self_attn.q_proj, Linear4bit)
    assert not any(isinstance(m, Linear4bit) for m in model.model.author_state.modules())
    for name, param in model.model.author_state.named_parameters():
        assert param.dtype == torch.float32, name
    lora = peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"],
                           modules_to_save=["author_state"])
    model = peft.get_peft_model(model, lora).train()
    ids = _ids(2, 3, 12)
    out = model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss) and (out.injection_norm == 0).all()
    assert ((0 < out.state_abs_mean) & (out.state_abs_mean < 1)).all()
    out.loss.backward()
    trained = {n: p for n, p in model.named_parameters() if "modules_to_save" in n}
    gate = next(p for n, p in trained.items() if n.endswith(OPENS_FIRST[mechanism]))
    assert gate.dtype == torch.float32 and gate.grad.abs().sum() > 0
