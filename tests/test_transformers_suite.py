"""HuLlama on transformers' own model test suite (`ModelTesterMixin` and `ConfigTester` of the installed release).

The suite is the contract every transformers model keeps (save and load, missing keys, fp32 modules, attentions and
hidden states, return_dict=False, checkpointing, training, resizing embeddings, SDPA against eager, ...). It comes
from the installed release's sdist (tests/upstream_suite.py); where it has not been fetched, this module is skipped
with the command that fetches it. Tests that do not apply to HuLlama are skipped below, each with its reason.
"""

import unittest
from contextlib import ExitStack
from unittest.mock import patch

import pytest
import torch

import upstream_suite

if not (upstream_suite.suite_dir() / upstream_suite.PACKAGE).is_dir():
    pytest.skip(f"transformers' common tests are not fetched for this release: run `python tests/upstream_suite.py`",
                allow_module_level=True)

import sys  # noqa: E402

sys.path.insert(0, str(upstream_suite.suite_dir()))
from transformers.models.auto import configuration_auto, modeling_auto  # noqa: E402
from transformers_common_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_common_tests.test_modeling_common import ModelTesterMixin, ids_tensor  # noqa: E402

from configuration_hullama import HuLlamaConfig  # noqa: E402
from modeling_hullama import HuLlamaForCausalLM, HuLlamaForSequenceClassification, HuLlamaModel  # noqa: E402

# The suite tells a base model from its heads by the class names in transformers' auto mappings.
AUTO_NAMES = (
    (modeling_auto.MODEL_MAPPING_NAMES, "HuLlamaModel"),
    (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "HuLlamaForCausalLM"),
    (modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, "HuLlamaForSequenceClassification"),
)


class HuLlamaModelTester:
    def __init__(self, parent, batch_size=3, seq_length=7, vocab_size=99, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, intermediate_size=37, max_position_embeddings=512,
                 num_labels=3, pad_token_id=0):
        self.parent = parent
        self.batch_size, self.seq_length, self.vocab_size = batch_size, seq_length, vocab_size
        self.hidden_size, self.num_hidden_layers = hidden_size, num_hidden_layers
        self.num_attention_heads, self.num_key_value_heads = num_attention_heads, num_key_value_heads
        self.intermediate_size, self.max_position_embeddings = intermediate_size, max_position_embeddings
        self.num_labels, self.pad_token_id = num_labels, pad_token_id
        self.is_training = True

    def get_config(self):
        return HuLlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
            intermediate_size=self.intermediate_size, max_position_embeddings=self.max_position_embeddings,
            num_labels=self.num_labels, pad_token_id=self.pad_token_id,
        )

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = torch.tril(torch.ones(self.batch_size, self.seq_length, dtype=torch.long))
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class HuLlamaModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (HuLlamaModel, HuLlamaForCausalLM, HuLlamaForSequenceClassification)
    # One block's recurrence step feeds only later blocks, so a one-block input leaves it without a gradient.
    test_all_params_have_gradient = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._registered = ExitStack()
        for names, class_name in AUTO_NAMES:
            cls._registered.enter_context(patch.dict(names, {"hullama": class_name}))
        # What AutoConfig.register and AutoModel*.register add, for this class only (the auto classes then load a
        # saved HuLlama with this code, as they do a model that ships with transformers).
        registrations = (
            (configuration_auto.CONFIG_MAPPING, "hullama", HuLlamaConfig),
            (modeling_auto.MODEL_MAPPING, HuLlamaConfig, HuLlamaModel),
            (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING, HuLlamaConfig, HuLlamaForCausalLM),
            (modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING, HuLlamaConfig, HuLlamaForSequenceClassification),
        )
        for mapping, key, value in registrations:
            cls._registered.enter_context(patch.dict(mapping._extra_content, {key: value}))

    @classmethod
    def tearDownClass(cls):
        cls._registered.close()
        super().tearDownClass()

    def setUp(self):
        self.model_tester = HuLlamaModelTester(self)
        self.config_tester = ConfigTester(self, config_class=HuLlamaConfig, hidden_size=32, num_attention_heads=4)

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip("upstream builds its failure message by subtracting the two outputs, which torch refuses for bool "
                   "tensors (block_mask); tests/test_model_contract.py checks the same equivalence")
    def test_model_outputs_equivalence(self):
        pass

    @unittest.skip("HuLlama refuses reentrant checkpointing on purpose: the state enters as a keyword tensor, which "
                   "reentrant checkpointing gives no gradient")
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass

    @unittest.skip("needs GenerationTesterMixin, which the sdist lacks; tests/test_generation.py tests generation")
    def test_generation_tester_mixin_inheritance(self):
        pass
