"""The test Hub (tests/hub_server.py) driven by the real huggingface_hub and transformers clients."""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile, RepoFolder
from safetensors.torch import save_file

from hullama.data.tokenizer import train_byte_bpe
from tests.hub_server import HubServer, hub_server  # noqa: F401 - `hub_server` is a fixture

# huggingface_hub's own LFS PUT passes `data=` to httpx2, which warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "test-user/tiny-llama"


@pytest.fixture
def model_dir(tmp_path):
    """A folder like a small saved model: safetensors weights, config, remote code and a tokenizer."""
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"embed.weight": torch.arange(24, dtype=torch.float32).reshape(6, 4)}, str(folder / "model.safetensors"))
    config = {"model_type": "llama", "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1,
              "intermediate_size": 8, "vocab_size": 300}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "modeling_hullama.py").write_text("def answer():\n    return 42\n")
    train_byte_bpe(["some text"] * 100, vocab_size=300).save_pretrained(folder)
    return folder


@pytest.fixture
def fast_backoff(monkeypatch):
    """Make huggingface_hub's retry sleeps instant; returns the list of requested sleep durations."""
    import huggingface_hub.file_download
    import huggingface_hub.utils._http

    sleeps = []
    shim = types.SimpleNamespace(sleep=sleeps.append, time=time.time, monotonic=time.monotonic)
    monkeypatch.setattr(huggingface_hub.utils._http, "time", shim)
    monkeypatch.setattr(huggingface_hub.file_download, "time", shim)
    return sleeps


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


_FRESH_CLIENT = """
import json, sys
from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoTokenizer
repo_id = sys.argv[1]
path = snapshot_download(repo_id)
tokenizer = AutoTokenizer.from_pretrained(repo_id)
config = AutoConfig.from_pretrained(repo_id)
print(json.dumps({"path": path, "ids": tokenizer("some text")["input_ids"], "vocab": len(tokenizer),
                  "model_type": config.model_type}))
"""


def test_private_repo_upload_list_and_fresh_process_download(hub_server, model_dir, tmp_path):
    api = hub_server.api()
    url = api.create_repo(REPO_ID, private=True)
    assert url.repo_id == REPO_ID and hub_server.is_private(REPO_ID)
    api.create_repo(REPO_ID, private=True, exist_ok=True)
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(REPO_ID, private=True)
    assert conflict.value.response.status_code == 409
    with pytest.raises(RepositoryNotFoundError):  # private: invisible without a token
        hub_server.api(token=False).model_info(REPO_ID)

    hub_server.clear_requests()
    commit = api.upload_folder(repo_id=REPO_ID, folder_path=model_dir, commit_message="add model")
    routes = [r.route for r in hub_server.requests]
    assert routes == ["preupload", "lfs_batch", "lfs_upload", "lfs_verify", "commit"]
    assert hub_server.head(REPO_ID) == commit.oid
    assert hub_server.lfs_files(REPO_ID) == {"model.safetensors"}  # by .gitattributes, through basic LFS

    local = _local_files(model_dir)
    assert {"tokenizer.json", "tokenizer_config.json"} <= local.keys()
    assert sorted(api.list_repo_files(REPO_ID)) == sorted([*local, ".gitattributes"])
    info = api.model_info(REPO_ID, files_metadata=True)
    assert info.private and info.sha == commit.oid
    assert {s.rfilename: s.lfs is not None for s in info.siblings}["model.safetensors"]

    # A fresh process: empty HF_HOME, HF_ENDPOINT/HF_TOKEN from the environment.
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_CLIENT, REPO_ID],
        env=hub_server.client_env(hf_home=tmp_path / "hf_home"),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    snapshot = Path(out["path"])
    assert snapshot.is_relative_to(tmp_path / "hf_home")
    for rel, content in local.items():
        assert (snapshot / rel).read_bytes() == content, rel
    expected = train_byte_bpe(["some text"] * 100, vocab_size=300)
    assert out["ids"] == expected("some text")["input_ids"] and out["vocab"] == len(expected)
    assert out["model_type"] == "llama"
    assert not [r for r in hub_server.requests if r.route == "xet_token"]


def test_second_commit_serves_new_revision(hub_server, tmp_path):
    api = hub_server.api()
    api.create_repo(REPO_ID)
    first = api.upload_file(path_or_fileobj=b'{"v": 1}', path_in_repo="config.json", repo_id=REPO_ID)
    second = api.upload_file(path_or_fileobj=b'{"v": 2}', path_in_repo="config.json", repo_id=REPO_ID)
    assert first.oid != second.oid and hub_server.head(REPO_ID) == second.oid
    assert hub_server.history(REPO_ID)[:2] == [second.oid, first.oid]
    assert [c.commit_id for c in api.list_repo_commits(REPO_ID)][:2] == [second.oid, first.oid]

    def download(revision):
        path = hf_hub_download(REPO_ID, "config.json", revision=revision, endpoint=hub_server.endpoint,
                               token=hub_server.default_token, cache_dir=tmp_path / "cache")
        return Path(path).read_bytes()

    assert download("main") == b'{"v": 2}'
    assert download(first.oid) == b'{"v": 1}'
    assert download(second.oid) == b'{"v": 2}'

    # Unchanged content: preupload reports the remote oid and the client skips the commit.
    hub_server.clear_requests()
    again = api.upload_file(path_or_fileobj=b'{"v": 2}', path_in_repo="config.json", repo_id=REPO_ID)
    assert again.oid == second.oid and not hub_server.calls("commit")

    deleted = api.delete_file("config.json", repo_id=REPO_ID)
    assert hub_server.head(REPO_ID) == deleted.oid and "config.json" not in hub_server.files(REPO_ID)
    assert hub_server.files(REPO_ID, revision=second.oid)["config.json"] == b'{"v": 2}'


def test_commit_500_is_an_http_error_and_leaves_the_repo_unchanged(hub_server, model_dir):
    api = hub_server.api()
    api.create_repo(REPO_ID)
    api.upload_file(path_or_fileobj=b"v1", path_in_repo="notes.txt", repo_id=REPO_ID)
    head, files = hub_server.head(REPO_ID), hub_server.files(REPO_ID)

    with hub_server.fail("commit") as failure:
        start = time.monotonic()
        with pytest.raises(HfHubHTTPError) as err:
            api.upload_folder(repo_id=REPO_ID, folder_path=model_dir)
        assert time.monotonic() - start < 10
    assert err.value.response.status_code == 500 and failure.hits == 1
    assert hub_server.head(REPO_ID) == head and hub_server.files(REPO_ID) == files

    api.upload_folder(repo_id=REPO_ID, folder_path=model_dir)  # disarmed on exit: works again
    assert hub_server.head(REPO_ID) != head


def test_transient_500_is_retried_by_the_client(hub_server, fast_backoff):
    api = hub_server.api()
    api.create_repo(REPO_ID)
    hub_server.fail("preupload", status=503, times=2)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO_ID)
    assert [r.status for r in hub_server.requests if r.route == "preupload"] == [503, 503, 200]
    assert fast_backoff == [1, 2]
    assert hub_server.files(REPO_ID)["x.txt"] == b"x"


def test_dropped_connection_mid_commit_errors_fast(hub_server):
    api = hub_server.api()
    api.create_repo(REPO_ID)
    head = hub_server.head(REPO_ID)
    hub_server.drop("commit", times=1)
    start = time.monotonic()
    with pytest.raises(httpx2.TransportError):
        api.upload_file(path_or_fileobj=b"a" * 100_000, path_in_repo="big.txt", repo_id=REPO_ID)
    assert time.monotonic() - start < 10
    (record,) = [r for r in hub_server.requests if r.route == "commit"]
    assert record.injected == "drop" and record.status is None
    assert hub_server.head(REPO_ID) == head


def test_dropped_lfs_upload_is_retried_then_fails_when_persistent(hub_server, fast_backoff):
    api = hub_server.api()
    api.create_repo(REPO_ID)
    payload = bytes(range(256)) * 64

    hub_server.drop("lfs_upload", times=1)
    api.upload_file(path_or_fileobj=payload, path_in_repo="a.safetensors", repo_id=REPO_ID)
    assert [r.injected for r in hub_server.requests if r.route == "lfs_upload"] == ["drop", None]
    assert hub_server.files(REPO_ID)["a.safetensors"] == payload

    head = hub_server.head(REPO_ID)
    hub_server.clear_requests()
    with hub_server.drop("lfs_upload"):
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="b.safetensors") as err:
            api.upload_file(path_or_fileobj=payload[::-1], path_in_repo="b.safetensors", repo_id=REPO_ID)
        assert time.monotonic() - start < 10
    assert isinstance(err.value.__cause__, httpx2.TransportError)
    assert len(hub_server.calls("lfs_upload")) == 6  # first try + the client's 5 retries
    assert not hub_server.calls("commit") and hub_server.head(REPO_ID) == head


def test_tree_pagination_paths_info_ranges_and_error_codes(hub_server, tmp_path, fast_backoff):
    hub_server.tree_page_size = 2
    files = {"a.txt": "a", "d/b.txt": "b", "d/e/c.txt": "c", "d/e/f.txt": "f", "z.bin": b"\0" * 1000}
    oid = hub_server.seed_repo(REPO_ID, files, lfs_paths=("z.bin",))
    api = hub_server.api()

    entries = list(api.list_repo_tree(REPO_ID, recursive=True))
    assert sorted(e.path for e in entries if isinstance(e, RepoFile)) == sorted([*files, ".gitattributes"])
    assert sorted(e.path for e in entries if isinstance(e, RepoFolder)) == ["d", "d/e"]
    tree_calls = [r for r in hub_server.requests if r.route == "tree"]
    assert len(tree_calls) == 4 and all("cursor=" in r.query for r in tree_calls[1:])
    assert [e.path for e in api.list_repo_tree(REPO_ID, path_in_repo="d")] == ["d/e", "d/b.txt"]
    assert next(e for e in entries if e.path == "z.bin").lfs.size == 1000

    info = api.get_paths_info(REPO_ID, ["d/e", "a.txt", "missing.txt"], revision=oid)
    assert [(type(i), i.path) for i in info] == [(RepoFolder, "d/e"), (RepoFile, "a.txt")]

    common = dict(endpoint=hub_server.endpoint, token=hub_server.default_token, cache_dir=tmp_path / "cache")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO_ID, "missing.txt", **common)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-user/nope", "a.txt", **common)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO_ID, "a.txt", revision="no-such-branch", **common)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("gpt2")
    with hub_server.fail("repo_info", status=404, code="RepoNotFound", times=1):
        with pytest.raises(RepositoryNotFoundError):
            api.model_info(REPO_ID)

    # A download cut halfway is retried by the client (which buffers up to 10 MB before writing,
    # so a small file restarts from 0 rather than resuming with a Range request).
    hub_server.drop("resolve", method="GET", times=1)
    path = hf_hub_download(REPO_ID, "z.bin", **common)
    assert Path(path).read_bytes() == b"\0" * 1000
    gets = [r.status for r in hub_server.requests if r.route == "resolve" and r.method == "GET"]
    assert gets[-2:] == [None, 200]
    headers = {"Authorization": f"Bearer {hub_server.default_token}", "Range": "bytes=10-"}
    ranged = httpx2.get(f"{hub_server.endpoint}/{REPO_ID}/resolve/main/d/e/c.txt", headers=headers)
    assert ranged.status_code == 416
    headers["Range"] = "bytes=990-"
    ranged = httpx2.get(f"{hub_server.endpoint}/{REPO_ID}/resolve/main/z.bin", headers=headers)
    assert (ranged.status_code, ranged.headers["Content-Range"]) == (206, "bytes 990-999/1000")
    assert ranged.content == b"\0" * 10
    assert ranged.headers["X-Linked-Etag"].strip('"') == next(e for e in entries if e.path == "z.bin").lfs.sha256


def test_stop_closes_the_port_and_joins_every_thread():
    before = set(threading.enumerate())
    server = HubServer().start()
    keep_alive = http.client.HTTPConnection(server.host, server.port, timeout=5)  # left idle, open
    keep_alive.request("GET", "/api/whoami-v2", headers={"Authorization": "Bearer t"})
    response = keep_alive.getresponse()
    assert response.status == 200 and json.loads(response.read())["name"] == "test-user"
    server.stop()
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("test-hub")]
    assert keep_alive.sock.recv(1) == b""  # the server closed its side
    keep_alive.close()
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=1).close()
