"""Widget examples with static outputs, computed by running the model.

Hosted inference does not run custom code, so a HuLlama card's widget examples carry their output in the metadata
(`widget: [{example_title, text, output}]`). The outputs here come from running the given model and tokenizer
through the same code as the Inference Endpoints handler, never from anywhere else:

    widget = compute_widget_examples(model, tokenizer)            # default examples for the model's kind
    render_card(..., widget=widget)

An example is one author: `text` holds the author's messages, one per line, oldest first.
  causal LM:  the earlier lines are the history, the last line is the prompt; output {"text": prompt + greedy
              continuation up to the separator}.
  classifier: output [{"label", "score"}, ...] best first, for the last message (message-level classifier, the
              message read in its author's context) or for the author (author-level classifier).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hullama.hub_card.handler import EndpointHandler

# Invented, everyday messages (no real person's data) for the default examples.
DEFAULT_EXAMPLES = {
    "causal-lm": [
        {
            "example_title": "Gardener",
            "messages": [
                "Planted the tomatoes today, the soil finally warmed up.",
                "Slugs got two of the lettuce seedlings overnight.",
                "This weekend I want to",
            ],
        },
        {
            "example_title": "Developer",
            "messages": [
                "fix off-by-one in the date parser",
                "add tests for empty input files",
                "update docs for the new",
            ],
        },
    ],
    "classifier": [
        {
            "example_title": "Weekend posts",
            "messages": [
                "Long walk by the river this morning, the weather was lovely.",
                "Tried a new recipe for dinner and it turned out great.",
                "Back to work tomorrow, not looking forward to the commute.",
            ],
        },
        {
            "example_title": "Developer",
            "messages": [
                "fix off-by-one in the date parser",
                "add tests for empty input files",
                "release 2.0 with the new plugin system",
            ],
        },
    ],
}


def example_text(messages: list[str]) -> str:
    """The widget text of one author: one message per line (a message may not contain a line break)."""
    if not messages:
        raise ValueError("a widget example needs at least one message")
    for i, message in enumerate(messages):
        if not isinstance(message, str) or not message.strip():
            raise ValueError(f"messages[{i}] must be a non-empty string, got {message!r}")
        if "\n" in message or "\r" in message:
            raise ValueError(f"messages[{i}] contains a line break: widget text holds one message per line")
    return "\n".join(messages)


def compute_widget_examples(
    model,
    tokenizer,
    examples: list[Mapping[str, Any]] | None = None,
    *,
    max_new_tokens: int = 20,
) -> list[dict[str, Any]]:
    """Widget entries {example_title, text, output} whose outputs are computed by running `model`.

    examples: [{"example_title": str, "messages": [str, ...]}] (default: DEFAULT_EXAMPLES for the model's kind).
    The causal LM decodes greedily (max_new_tokens), so the outputs are reproducible.
    """
    handler = EndpointHandler.from_model(model, tokenizer)
    examples = DEFAULT_EXAMPLES[handler.kind] if examples is None else examples
    entries = []
    for i, example in enumerate(examples):
        if not isinstance(example, Mapping) or "messages" not in example:
            raise ValueError(f"examples[{i}] must be a dict with 'messages' (and optionally 'example_title')")
        messages = list(example["messages"])
        text = example_text(messages)
        if handler.kind == "causal-lm":
            parameters = {"task": "generate", "max_new_tokens": max_new_tokens}
            response = handler({"inputs": messages, "parameters": parameters})
            output: Any = {"text": response["generated_text"]}
        else:
            response = handler({"inputs": messages, "parameters": {"task": "classify"}})
            output = response["scores"] if response["level"] == "author" else response["scores"][-1]
            if output is None:
                raise ValueError(f"examples[{i}]: the last message has no tokens, so there is nothing to classify")
        entry = {"text": text, "output": output}
        if example.get("example_title"):
            entry = {"example_title": str(example["example_title"]), **entry}
        entries.append(entry)
    return entries
