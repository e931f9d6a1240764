"""HuLlama training: author corpora to blocks, QLoRA set-up, Trainer subclasses and the CLIs."""

import logging

# bitsandbytes, on CPUs with AVX512-BF16, logs at import that the optional `kernels` package (which would fetch a
# kernel from the Hub) is missing; nothing here needs that kernel, and the line would precede every message a
# script prints. Set before bitsandbytes is first imported (peft and transformers' Trainer import it).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
