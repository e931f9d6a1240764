"""HuLlama model cards: rendering (`render_card`, `write_card`), offline validation, the Llama 3 licence rules,
widget examples with outputs computed by the model, and the Inference Endpoints handler (`hub_card/handler.py`,
copied into a model repo with `copy_handler`)."""

from hullama.hub_card.card import (
    check_llama3_naming, copy_handler, eval_results_from_rows, llama3_license, render_card, validate_card, write_card,
)
from hullama.hub_card.widget_examples import DEFAULT_EXAMPLES, compute_widget_examples

__all__ = [
    "DEFAULT_EXAMPLES",
    "check_llama3_naming",
    "compute_widget_examples",
    "copy_handler",
    "eval_results_from_rows",
    "llama3_license",
    "render_card",
    "validate_card",
    "write_card",
]
