"""Bad input gets one clear error message, not a stack trace from deep inside torch."""

import pytest
import torch

from conftest import tiny_hullama_config
from modeling_hullama import HuLlamaForCausalLM, HuLlamaForSequenceClassification


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HuLlamaForCausalLM(tiny_hullama_config()).eval()


def _ids(*shape):
    return torch.randint(2, 512, shape)


@pytest.mark.parametrize("shape", [(12,), (1, 2, 3, 12)])
def test_wrong_input_rank(model, shape):
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, tokens\] or \[batch, blocks, tokens\]"):
        model(_ids(*shape))


def test_wrong_inputs_embeds_shape(model):
    with pytest.raises(ValueError, match="inputs_embeds must be"):
        model(inputs_embeds=torch.zeros(2, 5, 7))


def test_both_or_neither_inputs(model):
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(_ids(1, 4), inputs_embeds=torch.zeros(1, 4, 64))


def test_block_longer_than_positions_runs_with_a_warning(model, caplog):
    """As Llama, a longer block runs (RoPE scaling may extend the positions); unscaled, the user is told once."""
    from transformers.utils import logging

    logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            out = model(_ids(1, 2, 65))
    finally:
        logging.disable_propagation()
    assert out.logits.shape == (1, 2, 65, model.config.vocab_size)
    assert "longer than max_position_embeddings=64" in caplog.text


def test_mismatched_author_state(model):
    with pytest.raises(ValueError, match=r"author_state must be \[batch=2, state_size=64\]; got shape \(2, 32\)"):
        model(_ids(2, 3, 8), author_state=torch.zeros(2, 32))
    with pytest.raises(ValueError, match=r"author_state must be \[batch=2"):
        model(_ids(2, 3, 8), author_state=torch.zeros(64))


def test_mismatched_mask_and_labels(model):
    with pytest.raises(ValueError, match=r"attention_mask must have the input's shape \(2, 3, 8\)"):
        model(_ids(2, 3, 8), attention_mask=torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have the input's shape"):
        model(_ids(2, 3, 8), labels=_ids(2, 24))


def test_several_blocks_with_a_cache(model):
    from transformers import DynamicCache

    with pytest.raises(ValueError, match="single block"):
        model(_ids(1, 2, 8), past_key_values=DynamicCache(config=model.config))


def test_message_labels_of_the_wrong_shape():
    classifier = HuLlamaForSequenceClassification(tiny_hullama_config(num_labels=3))
    with pytest.raises(ValueError, match=r"message-level labels must be \[batch, blocks, tokens\]"):
        classifier(_ids(2, 3, 8), labels=torch.zeros(2, 3, 7, dtype=torch.long))


def test_an_integer_author_state_is_refused(model):
    with pytest.raises(ValueError, match="author_state must be a float tensor"):
        model(_ids(2, 3, 8), author_state=torch.zeros(2, 64, dtype=torch.long))


@pytest.mark.parametrize("shape", [(2, 8), (2, 3, 8)])
def test_an_all_padding_input_is_refused(model, shape):
    with pytest.raises(ValueError, match="no real token in any block"):
        model(_ids(*shape), attention_mask=torch.zeros(shape, dtype=torch.long))
