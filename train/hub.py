"""Pushing a training output to the Hub with huggingface_hub: private by default, one commit per repo.

An upload that fails raises HubPushError with one clear line; the local output is never modified by a push.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

# Trainer checkpoints (optimizer states, RNG) and logs stay local.
_SKIP_PARTS = ("checkpoint-", "runs", "hullama-base")
# The same, as `hf upload` flags, for the command a failed push suggests.
RETRY_EXCLUDES = " ".join(f'--exclude "{part}*"' for part in _SKIP_PARTS)


class HubPushError(RuntimeError):
    pass


def _files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(_SKIP_PARTS) for part in p.relative_to(folder).parts)
    )


def push_folder(folder: str | Path, repo_id: str, *, private: bool = True, replace: dict[str, bytes] | None = None,
                commit_message: str = "Upload HuLlama training output", endpoint: str | None = None) -> str:
    """Create `repo_id` (if needed) and upload `folder` in one commit; `replace` swaps a file's content in transit.

    Returns the commit URL.
    """
    folder = Path(folder)
    replace = replace or {}
    api = HfApi(endpoint=endpoint)  # endpoint None: HF_ENDPOINT or the public Hub
    operations = [
        CommitOperationAdd(
            path_in_repo=path.relative_to(folder).as_posix(),
            path_or_fileobj=replace.get(path.relative_to(folder).as_posix(), path),
        )
        for path in _files(folder)
    ]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.create_commit(repo_id, operations=operations, commit_message=commit_message)
    except Exception as error:  # the HTTP client's own errors vary (HTTP status, dropped connection, LFS)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HubPushError(
            f"pushing {folder} to {repo_id} failed ({type(error).__name__}: {reason}); the local output in "
            f"{folder} is intact, push it again with `hf upload {repo_id} {folder} {RETRY_EXCLUDES}`"
        ) from error
    return commit.commit_url


def push_training_output(folder: str | Path, repo_id: str, *, private: bool = True,
                         base_repo_id: str | None = None, endpoint: str | None = None) -> dict[str, str]:
    """Push an output folder; for an adapter, also its HuLlama base, and point the pushed adapter at it."""
    folder = Path(folder)
    urls: dict[str, str] = {}
    adapter_config = folder / "adapter_config.json"
    replace = {}
    if adapter_config.is_file():
        settings = json.loads(adapter_config.read_text())
        local_base = Path(settings["base_model_name_or_path"])
        if local_base.is_dir():  # a local HuLlama base: it goes to the Hub too, and the adapter names it there
            base_repo_id = base_repo_id or f"{repo_id}-base"
            urls[base_repo_id] = push_folder(local_base, base_repo_id, private=private, endpoint=endpoint,
                                             commit_message="Upload HuLlama base (base weights + HuLlama code)")
            settings["base_model_name_or_path"] = base_repo_id
            replace["adapter_config.json"] = json.dumps(settings, indent=2).encode()
    urls[repo_id] = push_folder(folder, repo_id, private=private, replace=replace, endpoint=endpoint)
    return urls
