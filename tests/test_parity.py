"""Before training, HuLlama computes exactly what its Llama base computes (litgpt-style parity)."""

import torch
from torch.testing import assert_close
from transformers import LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel

from conftest import tiny_llama_config
from modeling_hullama import HuLlamaForCausalLM, HuLlamaForSequenceClassification, HuLlamaModel


def _ids(*shape, seed=0):
    return torch.randint(2, 512, shape, generator=torch.Generator().manual_seed(seed))


def test_causal_lm_single_block_equals_llama(tiny_llama_dir):
    llama = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    hullama = HuLlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ids = _ids(3, 20)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0  # right padding
    with torch.no_grad():
        assert_close(hullama(ids, attention_mask=mask).logits, llama(ids, attention_mask=mask).logits)


def test_causal_lm_blocks_equal_llama_on_independent_sequences(tiny_llama_dir):
    llama = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    hullama = HuLlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ids = _ids(2, 4, 16)
    with torch.no_grad():
        expected = llama(ids.view(8, 16)).logits.view(2, 4, 16, -1)
        assert_close(hullama(ids).logits, expected)


def test_base_model_hidden_states_equal_llama(tiny_llama_dir):
    llama = LlamaModel.from_pretrained(tiny_llama_dir).eval()
    hullama = HuLlamaModel.from_pretrained(tiny_llama_dir).eval()
    ids = _ids(2, 3, 12)
    with torch.no_grad():
        expected = llama(ids.view(6, 12)).last_hidden_state.view(2, 3, 12, -1)
        out = hullama(ids, output_hidden_states=True)
        assert_close(out.last_hidden_state, expected)
        assert len(out.hidden_states) == 5 and out.hidden_states[-1].shape == (2, 3, 12, 64)


def test_sequence_classification_equals_llama_head(tmp_path):
    torch.manual_seed(1)
    LlamaForSequenceClassification(tiny_llama_config(num_labels=3)).save_pretrained(tmp_path)
    llama = LlamaForSequenceClassification.from_pretrained(tmp_path).eval()
    hullama = HuLlamaForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = _ids(3, 10)
    ids[0, 7:] = 1  # pad_token_id, right padding
    mask = (ids != 1).long()
    with torch.no_grad():
        assert_close(hullama(ids, attention_mask=mask).logits, llama(ids, attention_mask=mask).logits)
        assert_close(hullama(ids).logits, llama(ids).logits)  # no mask: pad_token_id finds the last token


def test_new_modules_start_at_zero_contribution(tiny_llama_dir):
    state = HuLlamaForCausalLM.from_pretrained(tiny_llama_dir, state_mechanism="query").model.author_state
    assert torch.count_nonzero(state.state_to_query.weight) == 0
    state = HuLlamaForCausalLM.from_pretrained(tiny_llama_dir).model.author_state  # the default: gate
    assert torch.count_nonzero(state.residual_gate.alpha) == 0 and torch.count_nonzero(state.state_to_residual.weight)
    assert torch.count_nonzero(state.initial_state) == 0
    assert torch.count_nonzero(state.state_to_state.weight) > 0  # the recurrence itself is initialised
