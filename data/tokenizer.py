"""A byte-level BPE tokenizer trained on the spot, for models built from scratch and for tests.

Nothing is downloaded: the tokenizer learns its merges from the texts it is given (about 2 s for 50k lines).
Byte-level means every string, in any script, encodes without unknown tokens.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
MIN_VOCAB_SIZE = 258  # the 256 bytes, the separator and padding


def train_byte_bpe(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; its eos token doubles as HuLlama's message separator."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB_SIZE} "
                         "tokens")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def auto_tokenizer(source: str, *, trust_remote_code: bool = False):
    """`AutoTokenizer.from_pretrained(source)` with transformers' warnings silenced while it loads: it also reads a
    HuLlama folder's config.json and warns that its config registry does not know the type "hullama" (the tokenizer
    files suffice). Errors still raise."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    finally:
        hf_logging.set_verbosity(verbosity)
