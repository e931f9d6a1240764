"""HuLlama training: author corpora to blocks, QLoRA set-up, Trainer subclasses and the CLIs."""
