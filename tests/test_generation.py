"""Generation from a given author state, in the spirit of transformers' GenerationTesterMixin (which its sdist lacks):
greedy and sampled decoding, cached against uncached, batched with left padding against one author at a time.

A model that dropped its cache would still produce the right tokens, only slower, so the cached runs also check that
each decoding step embeds one new token.
"""

import pytest
import torch

from conftest import perturb_state_modules, tiny_hullama_config
from modeling_hullama import HuLlamaForCausalLM

MECHANISMS = ["query", "gate", "memory"]
PAD = 1


def _model(mechanism):
    torch.manual_seed(0)
    return perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config(state_mechanism=mechanism))).eval()


def _ids(*shape, seed=0):
    return torch.randint(2, 512, shape, generator=torch.Generator().manual_seed(seed))


def _states(model, batch, seed=5):
    return torch.randn(batch, model.config.state_size, generator=torch.Generator().manual_seed(seed)) * 3


def _left_padded():
    """Two prompts of 6 and 4 tokens, the shorter one left-padded, as batched generation has them."""
    prompt = _ids(2, 6)
    mask = torch.ones_like(prompt)
    prompt[1, :2], mask[1, :2] = PAD, 0
    return prompt, mask


def _generate(model, prompt, mask, state, use_cache, **sampling):
    seen = []
    hook = model.model.embed_tokens.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[-1]))
    try:
        out = model.generate(prompt, attention_mask=mask, author_state=state, max_new_tokens=5, pad_token_id=PAD,
                             use_cache=use_cache, **sampling)
    finally:
        hook.remove()
    return out, seen


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_greedy_cached_equals_uncached_and_the_forward_argmax(mechanism):
    model = _model(mechanism)
    prompt, mask = _left_padded()
    state = _states(model, 2)
    cached, seen = _generate(model, prompt, mask, state, use_cache=True, do_sample=False)
    assert seen == [6, 1, 1, 1, 1], "decoding did not use its cache"
    uncached, seen = _generate(model, prompt, mask, state, use_cache=False, do_sample=False)
    assert seen == [6, 7, 8, 9, 10]
    assert torch.equal(cached, uncached)
    full_mask = torch.cat([mask, torch.ones(2, 5, dtype=torch.long)], 1)
    with torch.no_grad():
        logits = model(cached, attention_mask=full_mask, author_state=state, use_cache=False).logits
    assert torch.equal(logits[:, 5:-1].argmax(-1), cached[:, 6:])
    without_state, _ = _generate(model, prompt, mask, None, use_cache=True, do_sample=False)
    assert not torch.equal(without_state, cached)  # the state conditions the continuation


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sampling_cached_equals_uncached_with_the_same_seed(mechanism):
    model = _model(mechanism)
    prompt, mask = _left_padded()
    state = _states(model, 2)
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(11)
        runs.append(_generate(model, prompt, mask, state, use_cache, do_sample=True, top_k=0, temperature=1.5)[0])
    assert torch.equal(*runs)
    torch.manual_seed(12)
    other = _generate(model, prompt, mask, state, True, do_sample=True, top_k=0, temperature=1.5)[0]
    assert not torch.equal(other, runs[0])  # it samples


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_batched_left_padded_generation_equals_each_author_alone(mechanism):
    model = _model(mechanism)
    prompt, mask = _left_padded()
    state = _states(model, 2)
    batched, _ = _generate(model, prompt, mask, state, use_cache=True, do_sample=False)
    for row, real in ((0, slice(0, 6)), (1, slice(2, 6))):
        alone, _ = _generate(model, prompt[row:row + 1, real], None, state[row:row + 1], True, do_sample=False)
        assert torch.equal(batched[row, 6:], alone[0, -5:]), row
