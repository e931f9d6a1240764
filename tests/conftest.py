"""Shared fixtures: a tokenizer trained in the test session, tiny Llama configs, the shared corpora."""

import random
from pathlib import Path

import pytest

from train.tokenizer import train_byte_bpe

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
