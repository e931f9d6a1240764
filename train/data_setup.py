"""From data arguments to train / held-out corpora, shared by the training scripts."""

from __future__ import annotations

from hullama.data.corpus import ColumnNames, Corpus, CorpusError, NamedDataset, load_corpus, split_by_author
from hullama.data.synthetic import synthetic_corpus
from hullama.train.args import DataArguments, split_paths


def column_names(data_args: DataArguments, with_label: bool) -> ColumnNames:
    return ColumnNames(
        user_id=data_args.user_column,
        message=data_args.message_column,
        timestamp=data_args.timestamp_column or None,
        label=data_args.label_column if with_label else None,
    )


def load_corpora(data_args: DataArguments, *, task: str, seed: int, **corpus_kwargs) -> tuple[Corpus, Corpus]:
    """(train, held-out) corpora, split by author; the embedded synthetic corpus when no file is given."""
    with_label = task != "lm"
    columns = column_names(data_args, with_label)
    if data_args.dataset_name:
        source = NamedDataset(data_args.dataset_name, data_args.dataset_config_name, data_args.dataset_split)
    elif data_args.train_file is None:
        frame = synthetic_corpus(data_args.synthetic_authors, data_args.synthetic_messages, seed=seed)
        source, columns = frame, ColumnNames(label="label" if with_label else None)
    else:
        files = split_paths(data_args.train_file)
        source = files if len(files) > 1 else files[0]
    corpus = load_corpus(source, columns=columns, task=task, **corpus_kwargs)
    held_out_source = None
    if data_args.validation_split:
        held_out_source = NamedDataset(data_args.dataset_name, data_args.dataset_config_name, data_args.validation_split)
    elif data_args.validation_file:
        files = split_paths(data_args.validation_file)
        held_out_source = files if len(files) > 1 else files[0]
    if held_out_source is not None:
        held_out = load_corpus(held_out_source, columns=columns, task=task, split="validation",
                               labels=list(corpus.label2id) if corpus.label2id else None, **corpus_kwargs)
        train = corpus
    else:
        fraction = data_args.validation_fraction
        splits = split_by_author(corpus, {"train": 1 - fraction, "validation": fraction}, seed=seed)
        train, held_out = splits["train"], splits["validation"]
    if data_args.max_eval_authors and len(held_out.authors) > data_args.max_eval_authors:
        held_out = held_out.subset(held_out.authors[: data_args.max_eval_authors], "validation")
    check_author_split(train, held_out, data_args)
    return train, held_out


def check_author_split(train: Corpus, held_out: Corpus, data_args: DataArguments) -> None:
    """Training and held-out authors: both present, and no author in both (held-out scores would be in-sample)."""
    if not held_out.authors:
        how = (f"--validation_file {data_args.validation_file}" if data_args.validation_file else
               f"--validation_split {data_args.validation_split}" if data_args.validation_split else
               f"--validation_fraction {data_args.validation_fraction} of {len(train.authors)} authors")
        raise CorpusError(held_out.source, f"no held-out author ({how} rounds to none): give more authors, a larger "
                                           "--validation_fraction or a --validation_file")
    if not train.authors:
        raise CorpusError(train.source, "no training author is left after holding authors out")
    shared = sorted(set(train.authors) & set(held_out.authors))
    if shared:
        raise CorpusError(held_out.source, f"{len(shared)} held-out authors are also training authors (e.g. "
                                           f"{shared[0]!r}): held-out scores would be in-sample")
