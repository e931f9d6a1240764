"""HuLlamaConfig: resolved defaults, lossless conversion from Llama, validation that names the field."""

import pytest
from transformers import AutoConfig, LlamaConfig

from configuration_hullama import AUTO_MAP, HuLlamaConfig
from conftest import tiny_hullama_config, tiny_llama_config


def test_depth_dependent_defaults_are_resolved():
    config = HuLlamaConfig(num_hidden_layers=12, hidden_size=64, num_attention_heads=4)
    assert (config.insert_layer, config.extract_layer, config.state_size) == (6, 5, 64)
    llama3 = HuLlamaConfig(num_hidden_layers=32)
    assert (llama3.insert_layer, llama3.extract_layer) == (16, 15)  # Llama-3-8B
    assert (HuLlamaConfig(num_hidden_layers=1).insert_layer, HuLlamaConfig(num_hidden_layers=1).extract_layer) == (0, 0)
    assert HuLlamaConfig(max_position_embeddings=256).block_size == 256
    assert HuLlamaConfig().block_size == 1024


def test_llama_config_converts_without_loss():
    llama = tiny_llama_config(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 64}, tie_word_embeddings=True)
    hullama = HuLlamaConfig.from_llama_config(llama, block_size=32)
    llama_dict, hullama_dict = llama.to_dict(), hullama.to_dict()
    changed = {k for k in llama_dict if llama_dict[k] != hullama_dict.get(k)}
    assert changed == {"model_type"}
    assert hullama.model_type == "hullama" and hullama.block_size == 32


def test_llama_checkpoint_config_reads_as_hullama(tmp_path):
    tiny_llama_config().save_pretrained(tmp_path)
    config = HuLlamaConfig.from_pretrained(tmp_path)
    assert config.model_type == "hullama"
    assert config.hidden_size == 64 and config.auto_map == AUTO_MAP


def test_save_and_load_round_trip(tmp_path):
    config = tiny_hullama_config(state_pooling="mean", detach_state_every=2, classification_level="author",
                                 state_mechanism="memory", state_memory_tokens=2, state_init_scale=0.5,
                                 normalize_injected_state=True, normalize_state_update=False)
    config.save_pretrained(tmp_path)
    assert (tmp_path / "configuration_hullama.py").is_file()
    loaded = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(loaded.to_dict()) == strip(config.to_dict())


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("insert_layer", 4, "insert_layer=4 is out of range: must be an integer in [0, 3]"),
        ("extract_layer", -1, "extract_layer=-1 is out of range"),
        ("state_size", 0, "state_size=0 is invalid"),
        ("detach_state_every", -2, "detach_state_every=-2 is invalid"),
        ("block_size", 65, "block_size=65 is out of range: must be an integer in [2, max_position_embeddings=64]"),
        ("state_pooling", "max", "state_pooling='max' is invalid: must be one of 'last', 'mean'"),
        ("state_mechanism", "film", "state_mechanism='film' is invalid: must be one of 'query', 'gate', 'memory'"),
        ("state_memory_tokens", 0, "state_memory_tokens=0 is invalid: must be an integer >= 1"),
        ("state_init_scale", 0.0, "state_init_scale=0.0 is out of range: must be a finite number > 0"),
        ("state_init_scale", -1, "state_init_scale=-1 is out of range"),
        ("classification_level", "token", "classification_level='token' is invalid"),
    ],
)
def test_invalid_values_name_field_value_and_range(field, value, expected):
    with pytest.raises(Exception) as error:
        tiny_hullama_config(**{field: value})
    assert expected in str(error.value)
    assert isinstance(error.value, (ValueError, TypeError)) or "validation error" in str(error.value).lower()


def test_plain_llama_config_is_still_llama():
    assert LlamaConfig().model_type == "llama"  # subclassing must not leak into the parent
