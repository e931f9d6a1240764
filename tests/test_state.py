"""The author state: carried through padding, independent of batch-mates, resumable, and trainable."""

import pytest
import torch
from torch.testing import assert_close

from conftest import perturb_state_modules, tiny_hullama_config
from modeling_hullama import HuLlamaForCausalLM

# The default layout (extract below insert) runs all blocks in one batch; HaRT's (extract above insert) runs them in
# order. Every state property must hold for both.
LAYOUTS = {"all_at_once": {}, "in_order": {"insert_layer": 1, "extract_layer": 2}}
layouts = pytest.mark.parametrize("layout", sorted(LAYOUTS))


def _model(layout="all_at_once", **config_fields):
    config_fields = {**LAYOUTS[layout], **config_fields}
    torch.manual_seed(0)
    return perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config(**config_fields))).eval()


def _ids(*shape, seed=0):
    return torch.randint(2, 512, shape, generator=torch.Generator().manual_seed(seed))


@layouts
def test_state_matters_once_trained(layout):
    model = _model(layout)
    ids = _ids(1, 3, 12)
    zeroed = torch.zeros(1, model.config.state_size)
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits[:, 1:], model(ids, author_state=zeroed).logits[:, 1:])


@layouts
def test_all_padding_block_carries_the_state_unchanged(layout):
    model = _model(layout)
    ids = _ids(2, 4, 12)
    mask = torch.ones_like(ids)
    mask[0, 1] = 0  # author 0: a padding block between two real ones
    mask[1, 2:] = 0  # author 1: trailing padding blocks
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    states = out.author_states
    assert torch.equal(states[0, 1], states[0, 0])
    assert not torch.equal(states[0, 2], states[0, 1])
    assert torch.equal(states[1, 3], states[1, 1]) and torch.equal(out.final_author_state[1], states[1, 1])
    assert out.block_mask.tolist() == [[True, False, True, True], [True, True, False, False]]
    assert torch.isfinite(out.logits).all()


@layouts
def test_author_outputs_do_not_depend_on_batch_mates(layout):
    model = _model(layout)
    alone_ids = _ids(1, 2, 12, seed=1)
    alone_mask = torch.ones_like(alone_ids)
    alone_mask[0, 1, 7:] = 0
    other_ids, other_mask = _ids(1, 3, 12, seed=2), torch.ones(1, 3, 12, dtype=torch.long)
    other_mask[0, 2, 3:] = 0
    # Batched: the first author gets a third, all-padding block (with junk token ids, which must not matter).
    ids = torch.cat([torch.cat([alone_ids, _ids(1, 1, 12, seed=3)], 1), other_ids])
    mask = torch.cat([torch.cat([alone_mask, torch.zeros(1, 1, 12, dtype=torch.long)], 1), other_mask])
    with torch.no_grad():
        alone = model(alone_ids, attention_mask=alone_mask)
        batched = model(ids, attention_mask=mask)
    real = alone_mask[0].bool()
    assert_close(batched.logits[0, :2][real], alone.logits[0][real])
    assert_close(batched.final_author_state[0], alone.final_author_state[0])
    assert_close(batched.author_states[0, :2], alone.author_states[0])


@layouts
def test_continuing_from_a_returned_state_equals_one_pass(layout):
    model = _model(layout)
    ids = _ids(2, 4, 12)
    with torch.no_grad():
        whole = model(ids)
        past = model(ids[:, :3])
        step = model(ids[:, 3], author_state=past.final_author_state)
    assert_close(step.logits, whole.logits[:, 3])
    assert_close(step.final_author_state, whole.final_author_state)
    assert_close(past.author_states, whole.author_states[:, :3])


@layouts
def test_state_modules_receive_gradients(layout):
    model = _model(layout).train()
    ids = _ids(2, 3, 12)
    model(ids, labels=ids).loss.backward()
    for name, param in model.model.author_state.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_zero_initialised_query_path_gets_a_gradient_at_start():
    torch.manual_seed(0)
    model = HuLlamaForCausalLM(tiny_hullama_config(state_mechanism="query")).train()
    ids = _ids(2, 3, 12)
    model(ids, labels=ids).loss.backward()
    assert model.model.author_state.state_to_query.weight.grad.abs().sum() > 0


def test_gradient_reaches_a_given_initial_state():
    model = _model().train()
    ids = _ids(2, 3, 12)
    start = torch.randn(2, model.config.state_size, requires_grad=True)
    model(ids, labels=ids, author_state=start).loss.backward()
    assert start.grad.abs().sum() > 0


def _grads(model, ids):
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@layouts
def test_gradient_checkpointing_gives_the_same_gradients(layout):
    model = _model(layout).train()
    ids = _ids(2, 3, 12)
    plain = _grads(model, ids)
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    checkpointed = _grads(model, ids)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert_close(checkpointed[name], plain[name], msg=name)


def test_reentrant_checkpointing_is_refused():
    with pytest.raises(ValueError, match="use_reentrant=False"):
        _model().gradient_checkpointing_enable({"use_reentrant": True})  # the deprecated alias, as peft calls it


@layouts
def test_truncated_backpropagation_cuts_the_state_gradient(layout):
    ids = _ids(1, 3, 12)
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]  # only the third block is scored
    for every, reaches_start in ((0, True), (1, False)):
        model = _model(layout, detach_state_every=every).train()
        model(ids, labels=labels).loss.backward()
        grad = model.model.author_state.initial_state.grad
        assert (grad is not None and grad.abs().sum() > 0) == reaches_start


def test_mean_pooling_differs_from_last_token():
    ids = _ids(1, 2, 12)
    with torch.no_grad():
        last = _model(state_pooling="last")(ids).final_author_state
        mean = _model(state_pooling="mean")(ids).final_author_state
    assert not torch.allclose(last, mean)


def test_generation_is_conditioned_on_the_state_and_matches_uncached_forward():
    model = _model()
    prompt = _ids(2, 6)
    mask = torch.ones_like(prompt)
    prompt[0, :2], mask[0, :2] = 1, 0  # left padding, as for batched generation
    states = torch.randn(2, model.config.state_size, generator=torch.Generator().manual_seed(5)) * 3
    outputs = []
    for state in (None, states):
        generated = model.generate(prompt, attention_mask=mask, author_state=state, max_new_tokens=6,
                                   do_sample=False, pad_token_id=1)
        full_mask = torch.cat([mask, torch.ones(2, 6, dtype=torch.long)], 1)
        with torch.no_grad():
            greedy = model(generated, attention_mask=full_mask, author_state=state, use_cache=False).logits
        assert torch.equal(greedy[:, 5:-1].argmax(-1), generated[:, 6:])
        outputs.append(generated)
    assert not torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("mechanism", ["query", "gate", "memory"])
def test_extract_below_insert_runs_all_blocks_at_once_with_the_same_results(mechanism):
    """With extract_layer < insert_layer the blocks run in one batch; results equal running them in order."""
    model = _model(insert_layer=3, extract_layer=1, state_mechanism=mechanism).train()
    ids = _ids(2, 3, 12)
    mask = torch.ones_like(ids)
    mask[0, 1] = 0  # a padding block in the middle
    mask[1, 2, 5:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    at_once = model(ids, attention_mask=mask, labels=labels)
    at_once.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    state, logits = None, []
    for k in range(3):  # one block per call: the cached, in-order path
        out = model(ids[:, k], attention_mask=mask[:, k], author_state=state, use_cache=True)
        state, logits = out.final_author_state, logits + [out.logits]
    stepwise = torch.stack(logits, 1)
    real = mask.bool()
    assert_close(at_once.logits[real], stepwise[real])
    assert_close(at_once.final_author_state, state)
    loss = torch.nn.functional.cross_entropy(stepwise[:, :, :-1].flatten(0, 2), labels[:, :, 1:].flatten(), ignore_index=-100)
    assert_close(at_once.loss, loss)
    loss.backward()
    for name, grad in grads.items():
        assert_close(model.get_parameter(name).grad, grad, msg=name, rtol=1e-4, atol=1e-6)
