"""HuLlama: human language modeling on Llama.

The model code is the two Hub modules `configuration_hullama` and `modeling_hullama` (top-level, as a model repo
ships them). This package holds everything else:

- `hullama.data`: author corpora, blocks, collation, the synthetic corpus;
- `hullama.train`: HuLM pre-training (`hullama-train`) and fine-tuning with author context (`hullama-finetune`);
- `hullama.eval`: held-out perplexity (`hullama-perplexity`), downstream tasks and probes (`hullama-probe`);
- `hullama.hub_card`: the model card, its widget examples and the Inference Endpoints handler.
"""

__version__ = "0.1.0"
