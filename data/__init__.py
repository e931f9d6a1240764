"""HuLlama's data layer (`hullama.data`): author corpora read and checked (`corpus`), laid out as blocks for every
variant (`blocks`), collated into batches (`collator`), the embedded synthetic corpus (`synthetic`) and a tokenizer
trained on a corpus (`tokenizer`). Training, evaluation and the model card all use it; it imports none of them."""

# The author-context variants every layout, training script and evaluation knows (data/blocks.py builds them).
VARIANTS = ("recurrent", "in_context", "none")
