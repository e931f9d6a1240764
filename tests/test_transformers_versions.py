"""The Hub code on every transformers release the package admits.

transformers 5.24 renamed the key-value cache from `past_key_values` to `cache` (output field, forward keyword, what
`generate` passes). A model that read only one name would still generate the right tokens without its cache, so
tests/test_generation.py checks that the cache is used (one new token per decoding step), not only that the tokens
agree. CI runs both files on the oldest and the newest admitted release (`.ci/run`).
"""

import configparser
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from packaging.specifiers import SpecifierSet
from torch.testing import assert_close
from transformers import __version__ as transformers_version
from transformers.cache_utils import Cache

import configuration_hullama
from conftest import perturb_state_modules, tiny_hullama_config
from modeling_hullama import CACHE_NAME, HuLlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]


def _model(mechanism):
    torch.manual_seed(0)
    return perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config(state_mechanism=mechanism))).eval()


def _ids(*shape, seed=0):
    return torch.randint(2, 512, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("keyword", ["cache", "past_key_values"])
def test_the_cache_is_on_the_output_and_accepted_under_either_name(keyword):
    model = _model("gate")
    ids, state = _ids(2, 7), torch.randn(2, model.config.state_size)
    with torch.no_grad():
        whole = model(ids, author_state=state, use_cache=False).logits
        first = model(ids[:, :6], author_state=state, use_cache=True)
        cache = getattr(first, CACHE_NAME)
        assert isinstance(cache, Cache) and cache.get_seq_length() == 6
        assert first[CACHE_NAME] is cache
        if keyword == "past_key_values" and CACHE_NAME == "cache":  # deprecated from 5.24 on, as upstream's
            with pytest.warns(FutureWarning, match="`past_key_values` is deprecated"):
                step = model(ids[:, 6:], author_state=state, **{keyword: cache})
        else:
            step = model(ids[:, 6:], author_state=state, **{keyword: cache})
    assert_close(step.logits[:, 0], whole[:, 6])
    assert getattr(step, CACHE_NAME).get_seq_length() == 7


def test_the_cache_given_under_both_names():
    """From 5.24 on, as transformers' own models: a deprecation warning, and `cache` is used. Before, an error."""
    model = _model("gate")
    ids = _ids(1, 5)
    with torch.no_grad():
        first = model(ids[:, :4], use_cache=True)
        other = model(_ids(1, 4, seed=1), use_cache=True)
        whole = model(ids, use_cache=False).logits
        both = dict(cache=getattr(first, CACHE_NAME), past_key_values=getattr(other, CACHE_NAME))
        if CACHE_NAME == "cache":
            with pytest.warns(FutureWarning, match="Both `past_key_values` and `cache` are set"):
                step = model(ids[:, 4:], **both)
            assert_close(step.logits[:, 0], whole[:, 4])  # continued from `cache`
        else:
            with pytest.raises(ValueError, match="not both"):
                model(ids[:, 4:], **both)


def test_cache_name_follows_the_installed_release():
    expected = "cache" if tuple(int(p) for p in transformers_version.split(".")[:2]) >= (5, 24) else "past_key_values"
    assert CACHE_NAME == expected


def test_setup_cfg_range_starts_at_the_hub_codes_minimum():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    requirement = next(line.strip() for line in parser["options"]["install_requires"].splitlines()
                       if line.strip().startswith("transformers"))
    specifiers = SpecifierSet(requirement[len("transformers"):])
    assert specifiers == SpecifierSet(configuration_hullama.TRANSFORMERS_RANGE)
    assert next(s.version for s in specifiers if s.operator == ">=") == configuration_hullama.MIN_TRANSFORMERS_VERSION
    assert transformers_version in specifiers, f"installed transformers {transformers_version} outside {specifiers}"


def test_an_old_transformers_gets_one_clear_error_at_import(tmp_path):
    """Simulated: the installed transformers reports an older version before the Hub code is imported."""
    child = (
        "import sys\n"
        "import transformers.models.llama.modeling_llama  # transformers replaces its module object as it loads\n"
        "sys.modules['transformers'].__version__ = '5.20.0'\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import modeling_hullama\n"
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    minimum = configuration_hullama.MIN_TRANSFORMERS_VERSION
    assert last == (
        f"ImportError: HuLlama needs transformers>={minimum}, but transformers 5.20.0 is installed; "
        f"upgrade with: pip install --upgrade 'transformers>={minimum},<5.40'"
    )
