"""Shared fixtures: a tokenizer trained in the test session, tiny Llama configs, the shared corpora."""

import random
from pathlib import Path

import pytest

from hullama.data.tokenizer import train_byte_bpe

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

_WORDS = (
    "the a an author writes about data models time people code numpy array fix bug test docs build "
    "release merge update add remove refactor climate vote feminism atheism abortion clinton love hate "
    "good bad happy sad today tomorrow always never I you we they it is was will be not very more"
).split()


def _sentences(n: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(n):
        yield " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 15)))


def pytest_report_header(config):
    """The versions a failure depends on, at the top of every run (CI runs the suite in several environments)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets", "huggingface_hub"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} not installed")
    return "hullama environment: " + ", ".join(found)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine extra threads wait on each other (10-20x
    slower). Subprocesses get the same through OMP_NUM_THREADS=1 in `make test`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level BPE (vocab 512) trained on generated sentences; eos is the message separator."""
    return train_byte_bpe(_sentences(5000), vocab_size=512)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a clean skip where the corpora are not present."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real corpora not found at {SHARED_DATA}")
    return SHARED_DATA


def tiny_llama_config(**overrides):
    """A random Llama small enough for CPU tests: 4 layers, hidden 64, grouped-query attention."""
    from transformers import LlamaConfig

    fields = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=0,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def tiny_hullama_config(**overrides):
    from configuration_hullama import HuLlamaConfig

    hullama_fields = {k: overrides.pop(k) for k in list(overrides) if k in HuLlamaConfig.__dataclass_fields__
                      and k not in tiny_llama_config().__dataclass_fields__}
    return HuLlamaConfig.from_llama_config(tiny_llama_config(**overrides), **hullama_fields)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A saved random LlamaForCausalLM checkpoint (float32)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(path)
    return path


def perturb_state_modules(model, std: float = 0.3, seed: int = 0):
    """Give the zero-initialised state path non-zero weights, as training would, so the state matters."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "author_state" in name:
                param.add_(torch.randn(param.shape, generator=generator) * std)
    return model
