"""The HuLlama model card: metadata (`ModelCardData`, `EvalResult` -> model-index) and body (template.md), rendered
with huggingface_hub's `ModelCard.from_template`, and checked offline.

    card = render_card(repo_id="me/Llama-3-HuLlama-8B", base_model="meta-llama/Meta-Llama-3-8B", adapter=True,
                       training_args=trainer.args.to_dict(), data_summary=str(data.report),
                       eval_results=[{"task_type": "text-generation", "task_name": "HuLM", "dataset_name": "...",
                                      "dataset_type": "...", "metric_type": "perplexity", "metric_value": 12.3}],
                       widget=compute_widget_examples(model, tokenizer))
    write_card("out/repo", **same_arguments)      # -> out/repo/README.md

Numbers only ever come from the arguments: no evaluation results means the card says "Not evaluated".
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from configuration_hullama import TRANSFORMERS_RANGE

TEMPLATE_PATH = Path(__file__).with_name("template.md")
HANDLER_PATH = Path(__file__).with_name("handler.py")
PAPER_ID = "2603.05928"
PAPER_URL = f"https://arxiv.org/abs/{PAPER_ID}"
KINDS = {"causal-lm": "text-generation", "classifier": "text-classification"}
LIBRARIES = ("transformers", "peft")
BASE_TAGS = ("custom_code", "human-language-modeling", "hulm", "hullama", "llama", f"arxiv:{PAPER_ID}")

# The training arguments shown first; everything else goes in a collapsed table.
KEY_HYPERPARAMETERS = (
    "learning_rate", "state_learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "lr_scheduler_type", "warmup_ratio", "warmup_steps", "weight_decay",
    "max_grad_norm", "optim", "seed", "bf16", "fp16", "gradient_checkpointing", "block_size", "max_blocks",
    "variant", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "load_in_4bit",
    "bnb_4bit_quant_type", "bnb_4bit_compute_dtype",
)
# Never publish credentials that a training-arguments dict may hold.
_SECRET_KEYS = {"hub_token", "push_to_hub_token", "token", "use_auth_token", "auth_token", "access_token", "api_key"}

_EVAL_REQUIRED = ("task_type", "dataset_name", "dataset_type", "metric_type", "metric_value")
_EVAL_OPTIONAL = ("task_name", "metric_name", "split", "dataset_split", "dataset_config", "dataset_revision",
                  "dataset_args", "metric_config", "metric_args", "source_name", "source_url")
_HUB_ID = re.compile(r"^(?![./])[\w.-]+(/[\w.-]+)?$")
_LLAMA3 = re.compile(r"llama[-_]?3(?:\.(\d+))?(?!\d)", re.IGNORECASE)


# ------------------------------------------------------------------------------------------ Llama 3 rules


def _names(base_model: str | list[str] | None) -> list[str]:
    if base_model is None:  # trained from scratch
        return []
    return [base_model] if isinstance(base_model, str) else list(base_model)


def llama3_license(base_model: str | list[str]) -> str | None:
    """`llama3`, `llama3.1`, ... when the base is a Llama 3 family model (by its name), else None."""
    for name in _names(base_model):
        match = _LLAMA3.search(name)
        if match:
            return "llama3" if match.group(1) is None else f"llama3.{match.group(1)}"
    return None


def check_llama3_naming(repo_id: str, base_model: str | list[str]) -> None:
    """The Llama 3 licence: a published derivative's model name must begin with "Llama-3". Raises ValueError."""
    if llama3_license(base_model) is None:
        return
    name = repo_id.rsplit("/", 1)[-1]
    if not name.startswith("Llama-3"):
        raise ValueError(
            f"base model {base_model!r} is a Llama 3 model: the Llama 3 licence requires the published model name "
            f"to begin with 'Llama-3', but {repo_id!r} is named {name!r} (e.g. use "
            f"'{repo_id.rsplit('/', 1)[0] + '/' if '/' in repo_id else ''}Llama-3-{name}')"
        )


# ---------------------------------------------------------------------------------------------- helpers


def _check_hub_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not _HUB_ID.match(value):
        raise ValueError(f"{what}={value!r} must be a Hub repo id like 'owner/name' (not a local path)")


def _cell(value: Any) -> str:
    """A value as one Markdown table cell."""
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _redacted(key: str, value: Any) -> Any:
    lowered = key.lower()
    if lowered in _SECRET_KEYS or "secret" in lowered or "password" in lowered:
        return "(redacted)" if value else value
    if isinstance(value, str) and value.startswith("hf_") and len(value) > 20:
        return "(redacted)"
    return value


def _training_rows(training_args: Mapping[str, Any] | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    if not training_args:
        return [], []
    items = [(str(k), _cell(_redacted(str(k), v))) for k, v in training_args.items()]
    main = [(k, v) for key in KEY_HYPERPARAMETERS for k, v in items if k == key]
    return (main, items) if main else (items, [])  # all arguments collapsed only when a summary is shown first


def _data_summary(summary: Any) -> tuple[str | None, list[tuple[str, str]] | None]:
    if summary is None:
        return None, None
    if isinstance(summary, Mapping):
        return None, [(_cell(k), _cell(v)) for k, v in summary.items()]
    return str(summary).strip(), None


def uses_qlora(training_args: Mapping[str, Any] | None) -> bool:
    """Whether resolved training arguments describe 4-bit (QLoRA) training."""
    if not training_args:
        return False
    args = dict(training_args)
    quant = args.get("quantization_config")
    if isinstance(quant, Mapping) and quant.get("load_in_4bit"):
        return True
    return bool(args.get("qlora") or args.get("load_in_4bit")) or str(args.get("quantization", "")).lower() in (
        "4bit", "4-bit", "nf4", "fp4", "qlora")


def eval_results_from_rows(rows: list[Mapping[str, Any]]) -> list[EvalResult]:
    """Result dicts ({task_type, task_name, dataset_name, dataset_type, metric_type, metric_name, metric_value,
    split?, ...}) as `EvalResult`s, values unchanged."""
    results = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"eval_results[{i}] must be a dict, got {type(row).__name__}")
        missing = [k for k in _EVAL_REQUIRED if row.get(k) is None]
        if missing:
            raise ValueError(f"eval_results[{i}] lacks {missing}; required: {', '.join(_EVAL_REQUIRED)}")
        unknown = sorted(set(row) - set(_EVAL_REQUIRED) - set(_EVAL_OPTIONAL))
        if unknown:
            raise ValueError(f"eval_results[{i}] has unknown keys {unknown}; allowed: "
                             f"{', '.join(_EVAL_REQUIRED + _EVAL_OPTIONAL)}")
        value = row["metric_value"]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise ValueError(f"eval_results[{i}].metric_value must be a finite number (or a string), got {value!r}")
        fields = {k: v for k, v in row.items() if k != "split"}
        if "split" in row:
            if row.get("dataset_split") not in (None, row["split"]):
                raise ValueError(f"eval_results[{i}] gives split and dataset_split with different values")
            fields["dataset_split"] = row["split"]
        results.append(EvalResult(**fields))
    return results


def _check_widget(widget: list[Mapping[str, Any]], pipeline_tag: str) -> list[dict[str, Any]]:
    entries = []
    for i, entry in enumerate(widget):
        where = f"widget[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("text"), str) or not entry["text"].strip():
            raise ValueError(f"{where} must be a dict with a non-empty 'text'")
        if "output" not in entry:
            raise ValueError(f"{where} has no 'output': hosted inference cannot run HuLlama's custom code, so every "
                             "example needs a static output computed by the model (hub_card.compute_widget_examples)")
        _check_widget_output(entry["output"], pipeline_tag, where)
        entries.append(dict(entry))
    return entries


def _check_widget_output(output: Any, pipeline_tag: str, where: str) -> None:
    if pipeline_tag == "text-generation":
        if not isinstance(output, Mapping) or not isinstance(output.get("text"), str):
            raise ValueError(f"{where}.output must be {{'text': str}} for text-generation, got {output!r}")
        return
    if not isinstance(output, list) or not output or not all(
        isinstance(o, Mapping) and isinstance(o.get("label"), str)
        and isinstance(o.get("score"), (int, float)) and not isinstance(o.get("score"), bool)
        for o in output
    ):
        raise ValueError(f"{where}.output must be a non-empty list of {{'label': str, 'score': float}} for "
                         f"text-classification, got {output!r}")


# ----------------------------------------------------------------------------------------------- render


def render_card(
    *,
    repo_id: str,
    base_model: str | list[str] | None,
    kind: str = "causal-lm",
    adapter: bool = False,
    training_args: Mapping[str, Any] | None = None,
    data_summary: str | Mapping[str, Any] | Any = None,
    eval_results: list[Mapping[str, Any]] | None = None,
    widget: list[Mapping[str, Any]] | None = None,
    license: str | None = None,
    datasets: str | list[str] | None = None,
    language: str | list[str] | None = None,
    tags: list[str] | None = None,
    qlora: bool | None = None,
    classification_level: str = "message",
    state_mechanism: str = "gate",
    normalize_state_update: bool = True,
    eval_notes: str | None = None,
    template_path: str | Path | None = None,
) -> ModelCard:
    """The model card of a HuLlama repo (`kind` "causal-lm" or "classifier"; `adapter`: a PEFT adapter repo).

    license: the base's licence (default "apache-2.0"); for a Llama 3 base it is set to the Llama 3 licence (a
    different value is an error) and the repo name must begin with "Llama-3". qlora: None infers it from
    training_args. widget: entries {example_title, text, output} with outputs computed by the model
    (`compute_widget_examples`). eval_results: result dicts (see `eval_results_from_rows`), or None: "Not evaluated".
    eval_notes: markdown printed under the results table (the machine, budgets, and what the numbers show).
    state_mechanism, normalize_state_update: the model's config fields of those names, for the architecture line.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _check_hub_id(repo_id, "repo_id")
    for name in _names(base_model):
        _check_hub_id(name, "base_model")
    pipeline_tag = KINDS[kind]
    llama_license = llama3_license(base_model)
    if llama_license is not None:
        check_llama3_naming(repo_id, base_model)
        if license is not None and license != llama_license:
            raise ValueError(f"base model {base_model!r} is under the {llama_license} licence: a derivative cannot be "
                             f"published as {license!r} (leave license unset)")
        license = llama_license
    license = license or "apache-2.0"
    qlora = uses_qlora(training_args) if qlora is None else bool(qlora)

    card_tags = list(BASE_TAGS)
    if adapter:
        card_tags += ["peft", "lora"]
    if qlora:
        card_tags.append("qlora")
    if llama_license:
        card_tags.append("llama-3")
    card_tags += list(tags or [])
    if eval_results:  # the corpus a score was measured on, by file name (its rows name a path)
        eval_results = [{**row, "dataset_name": file_names_only(str(row["dataset_name"]))}
                        if row.get("dataset_name") else row for row in eval_results]
    results = eval_results_from_rows(eval_results) if eval_results else None
    widget_entries = _check_widget(widget, pipeline_tag) if widget else None
    model_name = repo_id.rsplit("/", 1)[-1]

    card_data = ModelCardData(
        base_model=base_model,
        datasets=[datasets] if isinstance(datasets, str) else datasets,
        eval_results=results,
        model_name=model_name,
        language=language,
        library_name="peft" if adapter else "transformers",
        license=license,
        pipeline_tag=pipeline_tag,
        tags=card_tags,
        **({"widget": widget_entries} if widget_entries else {}),
    )
    training_main, training_all = _training_rows(training_args)
    summary_text, summary_rows = _data_summary(data_summary)
    if summary_text:  # shown as a code block, which file_names_only leaves alone: its paths are cut here
        summary_text = _LOCAL_FOLDERS.sub("", summary_text)
    eval_rows = [
        {
            "task": _cell(r.task_name or r.task_type),
            "dataset": _cell(r.dataset_name),
            "split": _cell(r.dataset_split or "-"),
            "metric": _cell(r.metric_name or r.metric_type),
            "value": _cell(r.metric_value),
        }
        for r in results or []
    ]
    first_base = (_names(base_model) or [None])[0]
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path or TEMPLATE_PATH),
        repo_id=repo_id,
        model_name=model_name,
        base_model=first_base,
        base_model_url=f"https://huggingface.co/{first_base}" if first_base else None,
        kind=kind,
        adapter=adapter,
        qlora=qlora,
        llama3=llama_license is not None,
        llama3_version=(llama_license or "llama3")[len("llama"):],
        paper_id=PAPER_ID,
        transformers_range=TRANSFORMERS_RANGE,
        paper_url=PAPER_URL,
        training_main=training_main,
        training_all=training_all,
        data_summary_text=summary_text,
        data_summary_rows=summary_rows,
        datasets=card_data.datasets,
        eval_rows=eval_rows,
        eval_notes=(eval_notes or "").strip(),
        has_widget=bool(widget_entries),
        classification_level=classification_level,
        state_mechanism=state_mechanism,
        normalize_state_update=normalize_state_update,
    )
    card.text = file_names_only(_tidy(card.text))
    validate_card(card)
    return card


# The folders of a local path ('/home/me/data/' in '/home/me/data/authors.jsonl', and ~/, ./, ../ paths); a Hub id
# ('owner/name') or a URL does not start a token with '/', '~' or '.'.
_LOCAL_FOLDERS = re.compile(r"(?<![\w:/.-])(?:~/|\.{1,2}/|/)(?:[^\s/\[\]()|`'\",]+/)+")


def file_names_only(text: str) -> str:
    """`text` with every local path cut to its file name, outside code blocks: a card is pushed, and a path tells
    where (and whose) the files were (the home folder, the user name)."""
    parts = text.split("```")
    for i in range(0, len(parts), 2):  # the even parts lie outside code blocks
        parts[i] = _LOCAL_FOLDERS.sub("", parts[i])
    return "```".join(parts)


def _tidy(text: str) -> str:
    """Collapse the runs of blank lines the template's conditionals leave, outside code blocks only."""
    parts = text.split("```")
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"\n{3,}", "\n\n", parts[i])
    return "```".join(parts)


def write_card(output_dir: str | Path, **kwargs: Any) -> Path:
    """Render the card (same arguments as `render_card`) and write it as `output_dir/README.md`."""
    path = Path(output_dir) / "README.md"
    render_card(**kwargs).save(path)
    return path


def copy_handler(output_dir: str | Path) -> Path:
    """Copy the Inference Endpoints handler into a model repo folder as `handler.py`."""
    target = Path(output_dir) / "handler.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HANDLER_PATH, target)
    return target


# --------------------------------------------------------------------------------------------- validate

_FRONT_MATTER = re.compile(r"\A---\r?\n(.*?)\r?\n---\r?\n", re.DOTALL)


def validate_card(card: ModelCard | str) -> dict[str, Any]:
    """Check a rendered card's metadata offline and return it (raises ValueError on the first problem).

    `ModelCard.validate()` is not used: it POSTs the card to the Hub's /api/validate-yaml endpoint, which needs the
    network (none here, and none in CI). Instead this parses the YAML front matter itself, checks the keys and value
    types the Hub requires of a model card (license, library_name, pipeline_tag, base_model, tags), the model-index
    structure (name; results with task.type, dataset.type/name, metrics with type and value) and the widget entries,
    and finally re-parses the text with huggingface_hub's own `ModelCard` / `ModelCardData`, which rejects a
    malformed model-index.
    """
    text = str(card)
    match = _FRONT_MATTER.match(text)
    if not match:
        raise ValueError("the card has no YAML front matter (--- ... --- at the top)")
    meta = yaml.safe_load(match.group(1))
    if not isinstance(meta, dict):
        raise ValueError("the card's YAML front matter must be a mapping")
    for key in ("license", "library_name", "pipeline_tag"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise ValueError(f"metadata {key!r} must be a non-empty string, got {meta.get(key)!r}")
    if meta["library_name"] not in LIBRARIES:
        raise ValueError(f"library_name must be one of {LIBRARIES}, got {meta['library_name']!r}")
    if meta["pipeline_tag"] not in KINDS.values():
        raise ValueError(f"pipeline_tag must be one of {tuple(KINDS.values())}, got {meta['pipeline_tag']!r}")
    base = meta.get("base_model")  # absent for a model trained from scratch
    if base is not None and not (
        isinstance(base, str) or (isinstance(base, list) and base and all(isinstance(b, str) for b in base))
    ):
        raise ValueError(f"base_model must be a repo id or a list of them, got {base!r}")
    for name in _names(base):
        _check_hub_id(name, "base_model")
    if not isinstance(meta.get("tags"), list) or not all(isinstance(t, str) for t in meta["tags"]):
        raise ValueError(f"tags must be a list of strings, got {meta.get('tags')!r}")
    if meta["library_name"] == "peft" and "peft" not in meta["tags"]:
        raise ValueError("an adapter card (library_name: peft) must carry the 'peft' tag")
    for key in ("datasets", "language"):
        value = meta.get(key)
        strings = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        if value is not None and not strings:
            raise ValueError(f"{key} must be a string or a list of strings, got {value!r}")
    if "model-index" in meta:
        _check_model_index(meta["model-index"])
    if "widget" in meta:
        if not isinstance(meta["widget"], list):
            raise ValueError("widget must be a list")
        _check_widget(meta["widget"], meta["pipeline_tag"])
    ModelCard(text)  # huggingface_hub's own parse: raises ValueError on a malformed model-index
    return meta


def _check_model_index(index: Any) -> None:
    if not isinstance(index, list) or len(index) != 1 or not isinstance(index[0], dict):
        raise ValueError("model-index must be a list holding one {name, results} mapping")
    entry = index[0]
    if not isinstance(entry.get("name"), str) or not isinstance(entry.get("results"), list) or not entry["results"]:
        raise ValueError("model-index[0] needs a string 'name' and a non-empty 'results' list")
    for i, result in enumerate(entry["results"]):
        where = f"model-index[0].results[{i}]"
        result = result if isinstance(result, dict) else {}
        task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
        if not isinstance(task, dict) or not isinstance(task.get("type"), str):
            raise ValueError(f"{where}.task.type must be a string")
        if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("type", "name")):
            raise ValueError(f"{where}.dataset needs string 'type' and 'name'")
        if not isinstance(metrics, list) or not metrics:
            raise ValueError(f"{where}.metrics must be a non-empty list")
        for j, metric in enumerate(metrics):
            if not isinstance(metric, dict) or not isinstance(metric.get("type"), str) or "value" not in metric:
                raise ValueError(f"{where}.metrics[{j}] needs a string 'type' and a 'value'")
            value = metric["value"]
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError(f"{where}.metrics[{j}].value must be a number or a string, got {value!r}")
