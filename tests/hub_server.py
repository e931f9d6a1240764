"""A small Hugging Face Hub-compatible HTTP server for tests (stdlib only, in-memory, 127.0.0.1).

It implements the subset of the Hub API that ``huggingface_hub`` 2.4 and ``transformers`` call for
model (and dataset/space) repos: repo creation/deletion, whoami, repo info, refs, commit history,
tree listing (recursive, cursor-paginated), paths-info, preupload, NDJSON commits, the git-LFS batch
API with the "basic" transfer (PUT + verify), and ``/resolve`` downloads (HEAD/GET, Range).

Usage::

    with HubServer() as hub, disable_xet():
        api = hub.api()                       # HfApi(endpoint=hub.endpoint, token=hub.default_token)
        api.create_repo("me/tiny", private=True)
        api.upload_folder(repo_id="me/tiny", folder_path=...)
        env = hub.client_env(hf_home=tmp_path / "hf")   # for a subprocess: HF_ENDPOINT, HF_HOME, HF_TOKEN...

Failure injection (switchable at run time, by route name, see ``ROUTES``)::

    hub.fail("commit")                   # every commit answers HTTP 500 until cleared
    hub.fail("preupload", status=503, times=1)
    hub.drop("lfs_upload", times=1)      # read half the body, then reset the connection
    with hub.fail("commit"): ...         # an injection is also a context manager
    hub.clear_failures()

Xet: ``huggingface_hub`` uploads every file the server marks "lfs" through Xet whenever the
``hf_xet`` package is importable, whatever the server says; only ``HF_HUB_DISABLE_XET`` turns that
off. This server does not implement Xet (its xet-token routes answer 501), so clients must run with
Xet disabled (``disable_xet()`` in-process, ``client_env()`` for subprocesses), or the server must be
built with ``lfs=False`` so that every file is committed inline ("regular").
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import itertools
import json
import os
import re
import socket
import struct
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

try:  # the fixture below is a convenience; the server itself needs only the stdlib
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

__all__ = ["HubServer", "Injection", "RequestRecord", "ROUTES", "disable_xet", "hub_server"]

DEFAULT_USER = "test-user"
DEFAULT_TOKEN = "hf_test_token_not_a_secret"
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses inline files above 10 MiB

# Route names used by the request log and by failure injection.
ROUTES = frozenset(
    {
        "whoami",
        "validate_yaml",
        "create_repo",
        "delete_repo",
        "repo_info",
        "refs",
        "commits",
        "tree",
        "paths_info",
        "preupload",
        "commit",
        "lfs_batch",
        "lfs_upload",
        "lfs_download",
        "lfs_verify",
        "resolve",
        "xet_token",
    }
)

_API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")

# Written for this server: the usual binary/weight formats are stored with LFS.
_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5", "*.joblib",
        "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet",
        "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*",
        "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)


# ----------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class Blob:
    """An immutable file version: its content and whether it is stored with LFS."""

    __slots__ = ("content", "lfs", "size", "sha256", "git_oid", "pointer_size")

    def __init__(self, content: bytes, lfs: bool = False):
        self.content = bytes(content)
        self.lfs = lfs
        self.size = len(self.content)
        self.sha256 = hashlib.sha256(self.content).hexdigest()
        if lfs:
            pointer = _lfs_pointer(self.sha256, self.size)
            self.git_oid = _git_blob_oid(pointer)
            self.pointer_size = len(pointer)
        else:
            self.git_oid = _git_blob_oid(self.content)
            self.pointer_size = None

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blob) and (self.lfs, self.git_oid) == (other.lfs, other.git_oid)

    def __hash__(self) -> int:
        return hash((self.lfs, self.git_oid))


@dataclass
class Commit:
    oid: str
    parents: tuple[str, ...]
    files: dict[str, Blob]
    title: str
    description: str
    date: datetime


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    branches: dict[str, str] = field(default_factory=dict)  # branch or PR ref -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content
    nb_prs: int = 0

    def resolve(self, revision: str) -> Commit:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.commits:
            return self.commits[revision]
        if 7 <= len(revision) < 40 and _HEX_RE.match(revision):
            matches = [oid for oid in self.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return self.commits[matches[0]]
        raise _HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")


def _dirs_of(files: dict[str, Blob]) -> set[str]:
    dirs = set()
    for path in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


def _tree_oid(files: dict[str, Blob], directory: str) -> str:
    prefix = directory + "/"
    listing = "".join(f"{p} {b.git_oid}\n" for p, b in sorted(files.items()) if p.startswith(prefix))
    return hashlib.sha1(b"tree " + listing.encode()).hexdigest()


def _lfs_paths(gitattributes: str | None) -> list[tuple[str, bool]]:
    rules = []
    for line in (gitattributes or "").splitlines():
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        for attr in tokens[1:]:
            if attr == "filter=lfs":
                rules.append((tokens[0], True))
            elif attr in ("-filter", "!filter"):
                rules.append((tokens[0], False))
    return rules


def _pattern_matches(pattern: str, path: str) -> bool:
    if "/" not in pattern.rstrip("/"):
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatch.fnmatchcase(path, pattern.lstrip("/"))


def _is_ignored(path: str, gitignore: str | None) -> bool:
    ignored = False
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for line in (gitignore or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        for i, candidate in enumerate(candidates):
            if dir_only and i == len(candidates) - 1:
                continue  # a "dir/" pattern never matches the file itself
            if _pattern_matches(pattern, candidate):
                ignored = not negate
                break
    return ignored


# ----------------------------------------------------------------------------------------------
# Failure injection and request log
# ----------------------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    method: str
    path: str  # raw request path, without the query string
    query: str
    route: str | None  # one of ROUTES, or None when nothing matched
    status: int | None = None  # None while in flight, or when the connection was dropped
    injected: str | None = None  # "error" or "drop" when a failure was injected


@dataclass(eq=False)
class Injection:
    """A failure armed on a route. Also a context manager that disarms it on exit."""

    route: str
    kind: str  # "error" or "drop"
    status: int = 500
    method: str | None = None
    times: int | None = None  # None: until removed
    after_bytes: int | None = None  # drop: request body bytes read before the reset (default: half)
    message: str = "Injected failure (test hub)"
    code: str | None = None  # X-Error-Code of an injected error, e.g. "RepoNotFound"
    hits: int = 0
    _hub: Any = field(default=None, repr=False)

    def remove(self) -> None:
        if self._hub is not None:
            self._hub._remove_injection(self)

    def __enter__(self) -> Injection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()


class _HubError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None, extra: dict | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.extra = extra or {}  # more fields for the JSON body


class _ConnectionDropped(Exception):
    pass


# ----------------------------------------------------------------------------------------------
# HTTP layer
# ----------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """Tracks its connections and worker threads so that `close_all` can end them all."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = False

    def __init__(self, address, handler, hub: HubServer):
        self.hub = hub
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        worker = threading.Thread(
            target=self._work, args=(request, client_address), name="test-hub-conn", daemon=True
        )
        with self._conn_lock:
            self._connections.add(request)
            self._workers.add(worker)
        worker.start()

    def _work(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:  # a client that went away mid-request: nothing to report
            pass
        finally:
            self.shutdown_request(request)
            with self._conn_lock:
                self._connections.discard(request)
                self._workers.discard(threading.current_thread())

    def handle_error(self, request, client_address):  # keep test output quiet
        pass

    def close_all(self, timeout: float) -> list[threading.Thread]:
        with self._conn_lock:
            connections, workers = list(self._connections), list(self._workers)
        for conn in connections:  # wakes up workers blocked on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return [w for w in workers if w.is_alive()]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HuLlamaTestHub/1.0"
    timeout = 120  # idle keep-alive connections; `stop()` ends them sooner

    server: _HTTPServer

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.method = method
        self.url_path = split.path
        self.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self._body_consumed = False
        self._request_id = f"test-hub-{next(self.hub._request_ids)}"
        route, handler, args = self._match(method, split.path)
        self.record = RequestRecord(method, split.path, split.query, route)
        self.hub._log(self.record)
        try:
            injection = self.hub._take_injection(route, method)
            if injection is not None:
                self.record.injected = injection.kind
                if injection.kind == "drop":
                    self._drop(injection)
                self._read_body()
                raise _HubError(injection.status, injection.message, code=injection.code)
            body = self._read_body()
            if handler is None:
                raise _HubError(404, f"Not found: {method} {split.path}")
            handler(body, *args)
        except _ConnectionDropped:
            self.close_connection = True
        except _HubError as err:
            self._send_error(err)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:
            self.hub.errors.append(traceback.format_exc())
            self._send_error(_HubError(500, f"Test hub internal error: {exc!r}"))

    def _match(self, method: str, path: str) -> tuple[str | None, Callable | None, tuple]:
        segs = [unquote(s) for s in path.split("/")[1:]]
        if segs and segs[-1] == "" and len(segs) > 1:
            segs = segs[:-1]
        if segs[:2] == ["api", "whoami-v2"] and method == "GET":
            return "whoami", self._whoami, ()
        if segs[:2] == ["api", "validate-yaml"] and method == "POST":
            return "validate_yaml", self._validate_yaml, ()
        if segs[:3] == ["api", "repos", "create"] and method == "POST":
            return "create_repo", self._create_repo, ()
        if segs[:3] == ["api", "repos", "delete"] and method == "DELETE":
            return "delete_repo", self._delete_repo, ()
        if len(segs) >= 4 and segs[0] == "api" and segs[1] in _API_TYPES:
            repo_key = (_API_TYPES[segs[1]], f"{segs[2]}/{segs[3]}")
            rest = segs[4:]
            action = rest[0] if rest else None
            tail = "/".join(rest[1:])
            if action is None and method == "GET":
                return "repo_info", self._repo_info, (repo_key, None)
            if action == "revision" and method == "GET" and tail:
                return "repo_info", self._repo_info, (repo_key, tail)
            if action == "tree" and method == "GET" and len(rest) >= 2:
                return "tree", self._tree, (repo_key, rest[1], "/".join(rest[2:]))
            if action == "paths-info" and method == "POST" and tail:
                return "paths_info", self._paths_info, (repo_key, tail)
            if action == "preupload" and method == "POST" and tail:
                return "preupload", self._preupload, (repo_key, tail)
            if action == "commit" and method == "POST" and tail:
                return "commit", self._commit, (repo_key, tail)
            if action == "refs" and method == "GET":
                return "refs", self._refs, (repo_key,)
            if action == "commits" and method == "GET" and tail:
                return "commits", self._commits, (repo_key, tail)
            if action is not None and action.startswith("xet-"):
                return "xet_token", self._xet_token, ()
            return None, None, ()
        if len(segs) == 3 and segs[0] == "api" and segs[1] in _API_TYPES:
            return "repo_info", self._no_repo, ()  # an id without namespace: never created here
        if len(segs) >= 5 and segs[0] == "__test_lfs" and segs[1] in _URL_PREFIX:
            repo_key = (segs[1], f"{segs[2]}/{segs[3]}")
            if segs[4] == "verify" and method == "POST" and len(segs) == 5:
                return "lfs_verify", self._lfs_verify, (repo_key,)
            if len(segs) == 5 and method == "PUT":
                return "lfs_upload", self._lfs_upload, (repo_key, segs[4])
            if len(segs) == 5 and method in ("GET", "HEAD"):
                return "lfs_download", self._lfs_download, (repo_key, segs[4])
            return None, None, ()
        repo_type = "model"
        if segs and segs[0] in ("datasets", "spaces"):
            repo_type, segs = _API_TYPES[segs[0]], segs[1:]
        if (
            len(segs) == 6
            and segs[1].endswith(".git")
            and segs[2:] == ["info", "lfs", "objects", "batch"]
            and method == "POST"
        ):
            return "lfs_batch", self._lfs_batch, ((repo_type, f"{segs[0]}/{segs[1][:-4]}"),)
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            return "resolve", self._resolve, ((repo_type, f"{segs[0]}/{segs[1]}"), segs[3], "/".join(segs[4:]))
        if len(segs) >= 4 and segs[1] == "resolve" and method in ("GET", "HEAD"):
            return "resolve", self._no_repo, ()
        return None, None, ()

    def _no_repo(self, body: bytes) -> None:
        raise _HubError(404, "Repository not found", code="RepoNotFound")

    def _read_body(self, limit: int | None = None) -> bytes:
        """Read the request body (Content-Length or chunked), at most `limit` bytes."""
        if self._body_consumed:
            return b""
        chunks: list[bytes] = []
        got = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while limit is None or got < limit:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    raise ConnectionError("client closed the connection")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                want = size if limit is None else min(size, limit - got)
                chunk = self.rfile.read(want)
                chunks.append(chunk)
                got += len(chunk)
                if want < size:
                    break  # stopped mid-chunk (drop)
                self.rfile.readline(3)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            want = length if limit is None else min(length, limit)
            while got < want:
                chunk = self.rfile.read(min(want - got, 1 << 20))
                if not chunk:
                    raise ConnectionError("client closed the connection mid-body")
                chunks.append(chunk)
                got += len(chunk)
        self._body_consumed = limit is None
        return b"".join(chunks)

    def _drop(self, injection: Injection) -> None:
        """Read part of the request body (or send part of a download), then reset the connection."""
        length = int(self.headers.get("Content-Length") or 0)
        after = injection.after_bytes if injection.after_bytes is not None else length // 2
        with contextlib.suppress(OSError, ValueError):
            self._read_body(limit=after)
        if self.record.route == "resolve" and self.method == "GET":
            with contextlib.suppress(_HubError, OSError):
                self._resolve(b"", *self._match("GET", self.url_path)[2], truncate=True)
        with contextlib.suppress(OSError):
            # linger 0 => close() sends a TCP RST instead of a graceful FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.record.status = None
        raise _ConnectionDropped()

    def _send(self, status: int, body: Any = b"", headers: dict | None = None, content_type: str | None = None):
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
            content_type = content_type or "application/json; charset=utf-8"
        if not self._body_consumed:
            self._read_body()
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", self._request_id)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.method != "HEAD" and body:
            self.wfile.write(body)
        self.record.status = status

    def _send_error(self, err: _HubError) -> None:
        headers = {"X-Error-Message": err.message.replace("\n", " "), **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        with contextlib.suppress(OSError):
            self._send(err.status, {"error": err.message, **err.extra}, headers)

    # -- auth and lookup -----------------------------------------------------------------------

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer ") and auth[7:].strip():
            return auth[7:].strip()
        return None

    def _authorized(self) -> bool:
        token = self._token()
        return token is not None and (self.hub.token is None or token == self.hub.token)

    def _require_auth(self) -> None:
        if self._token() is None:
            raise _HubError(401, "You must be authenticated to access this resource.")
        if not self._authorized():
            raise _HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_key: tuple[str, str], write: bool = False) -> Repo:
        repo = self.hub._repos.get(repo_key)
        if repo is None or (repo.private and not self._authorized()):
            status = 401 if repo is not None else 404
            raise _HubError(status, "Repository not found", code="RepoNotFound")
        if write:
            self._require_auth()
        return repo

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.hub.endpoint}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # -- account and repos ---------------------------------------------------------------------

    def _validate_yaml(self, body: bytes) -> None:
        """The README front matter check a commit of README.md triggers: its YAML must parse to a mapping."""
        import yaml

        content = json.loads(body or b"{}").get("content", "")
        # The client sends the whole README.md; the metadata is its front matter, between two '---' lines.
        match = re.match(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            self._send(400, {"errors": [{"message": f"invalid YAML: {error}"}], "warnings": []})
            return
        if metadata is not None and not isinstance(metadata, dict):
            self._send(400, {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []})
            return
        self._send(200, {"errors": [], "warnings": []})

    def _whoami(self, body: bytes) -> None:
        self._require_auth()
        self._send(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(self.hub.user.encode()).hexdigest()[:24],
                "name": self.hub.user,
                "fullname": "Test User",
                "email": f"{self.hub.user}@example.invalid",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "",
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "test-token", "role": "write", "createdAt": _iso(_now())},
                },
            },
        )

    def _create_repo(self, body: bytes) -> None:
        self._require_auth()
        payload = json.loads(body or b"{}")
        name, namespace = payload.get("name"), payload.get("organization") or self.hub.user
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise _HubError(400, f"Invalid repo type: {repo_type}")
        if not isinstance(name, str) or not _NAME_RE.match(name) or not _NAME_RE.match(namespace):
            raise _HubError(400, f"Invalid repo name: {namespace}/{name}")
        private = payload.get("visibility") == "private" or payload.get("private") is True
        repo_id = f"{namespace}/{name}"
        with self.hub._lock:
            existing = self.hub._repos.get((repo_type, repo_id))
            if existing is not None:
                # the client reads "url" from this answer when create_repo(exist_ok=True)
                message = f"You already created this {repo_type} repo: {repo_id}"
                raise _HubError(409, message, extra={"url": self._repo_url(existing)})
            repo = self.hub._new_repo(repo_type, repo_id, private)
        self._send(200, {"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete_repo(self, body: bytes) -> None:
        self._require_auth()
        payload = json.loads(body or b"{}")
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload.get('name')}"
        with self.hub._lock:
            if self.hub._repos.pop((payload.get("type") or "model", repo_id), None) is None:
                raise _HubError(404, "Repository not found", code="RepoNotFound")
        self._send(200, {})

    def _repo_info(self, body: bytes, repo_key, revision: str | None) -> None:
        with self.hub._lock:
            repo = self._repo(repo_key)
            commit = repo.resolve(revision or "main")
        with_blobs = self.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=blob.size, blobId=blob.git_oid)
                if blob.lfs:
                    sibling["lfs"] = {"size": blob.size, "sha256": blob.sha256, "pointerSize": blob.pointer_size}
            siblings.append(sibling)
        namespace = repo.repo_id.split("/")[0]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": namespace,
            "sha": commit.oid,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(b.size for b in commit.files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        if repo.repo_type == "space":
            info["sdk"] = "static"
        self._send(200, info)

    def _refs(self, body: bytes, repo_key) -> None:
        with self.hub._lock:
            repo = self._repo(repo_key)
            branches = dict(repo.branches)

        def ref(name: str) -> dict:
            full = name if name.startswith("refs/") else f"refs/heads/{name}"
            return {"name": name, "ref": full, "targetCommit": branches[name]}

        payload = {
            "branches": [ref(n) for n in branches if not n.startswith("refs/pr/")],
            "converts": [],
            "tags": [],
        }
        if self.query.get("include_prs"):
            payload["pullRequests"] = [ref(n) for n in branches if n.startswith("refs/pr/")]
        self._send(200, payload)

    def _commits(self, body: bytes, repo_key, revision: str) -> None:
        with self.hub._lock:
            repo = self._repo(repo_key)
            commit = repo.resolve(revision)
            history = []
            while True:
                history.append(commit)
                if not commit.parents:
                    break
                commit = repo.commits[commit.parents[0]]
        items = [
            {
                "id": c.oid,
                "title": c.title,
                "message": c.description,
                "authors": [{"user": self.hub.user}],
                "date": _iso(c.date),
            }
            for c in history
        ]
        self._send_page(items, page_size=self.hub.tree_page_size)

    # -- tree and paths-info -------------------------------------------------------------------

    def _entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        blob = commit.files.get(path)
        if blob is not None:
            entry: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
        else:
            entry = {"type": "directory", "oid": _tree_oid(commit.files, path), "size": 0, "path": path}
        if expand:
            last = self.hub._last_commit(repo, commit, path)
            entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": _iso(last.date)}
        return entry

    def _send_page(self, items: list, page_size: int) -> None:
        offset = 0
        cursor = self.query.get("cursor")
        if cursor:
            try:
                offset = int(base64.urlsafe_b64decode(cursor.encode()).decode())
            except ValueError:
                raise _HubError(400, f"Invalid cursor: {cursor}") from None
        page = items[offset : offset + page_size]
        headers = {}
        if offset + page_size < len(items):
            params = {k: v for k, v in self.query.items() if k != "cursor"}
            params["cursor"] = base64.urlsafe_b64encode(str(offset + page_size).encode()).decode()
            headers["Link"] = f'<{self.hub.endpoint}{self.url_path}?{urlencode(params)}>; rel="next"'
        self._send(200, page, headers)

    def _tree(self, body: bytes, repo_key, revision: str, path: str) -> None:
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        expand = self.query.get("expand", "").lower() in ("1", "true")
        path = path.strip("/")
        with self.hub._lock:
            repo = self._repo(repo_key)
            commit = repo.resolve(revision)
            dirs = _dirs_of(commit.files)
            if path and path not in dirs:
                raise _HubError(
                    404, f"Entry not found: {path}", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid}
                )
            prefix = f"{path}/" if path else ""
            candidates = [p for p in itertools.chain(dirs, commit.files) if p.startswith(prefix)]
            if not recursive:
                candidates = [p for p in candidates if "/" not in p[len(prefix) :]]
            candidates.sort(key=lambda p: (p not in dirs, p) if not recursive else (p,))
            items = [self._entry(repo, commit, p, expand) for p in candidates]
        self._send_page(items, page_size=50 if expand else self.hub.tree_page_size)

    def _paths_info(self, body: bytes, repo_key, revision: str) -> None:
        if "json" in self.headers.get("Content-Type", ""):
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[-1].lower() in ("1", "true")
        if isinstance(paths, str):
            paths = [paths]
        with self.hub._lock:
            repo = self._repo(repo_key)
            commit = repo.resolve(revision)
            dirs = _dirs_of(commit.files)
            items = [
                self._entry(repo, commit, p.strip("/"), expand)
                for p in dict.fromkeys(paths)
                if p.strip("/") in commit.files or p.strip("/") in dirs
            ]
        self._send(200, items)

    # -- uploads -------------------------------------------------------------------------------

    def _preupload(self, body: bytes, repo_key, revision: str) -> None:
        payload = json.loads(body or b"{}")
        with self.hub._lock:
            repo = self._repo(repo_key, write=True)
            commit = repo.resolve(revision)
            attributes = commit.files.get(".gitattributes")
            lfs_rules = _lfs_paths(attributes.content.decode("utf-8", "replace") if attributes else None)
            gitignore = payload.get("gitIgnore")
            if gitignore is None and ".gitignore" in commit.files:
                gitignore = commit.files[".gitignore"].content.decode("utf-8", "replace")
            answers = []
            for item in payload.get("files", []):
                path, size = item["path"], int(item.get("size", 0))
                sample = base64.b64decode(item.get("sample", "") or "")
                lfs = self.hub._wants_lfs(path, size, sample, lfs_rules)
                remote = commit.files.get(path)
                oid = None
                if remote is not None:
                    oid = remote.sha256 if lfs else _git_blob_oid(remote.content)
                answers.append(
                    {
                        "path": path,
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": _is_ignored(path, gitignore),
                        "oid": oid,
                    }
                )
        self._send(200, {"files": answers, "commitOid": commit.oid})

    def _commit(self, body: bytes, repo_key, revision: str) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "The first line of a commit payload must be its header")
        header = lines[0].get("value") or {}
        create_pr = self.query.get("create_pr", "").lower() in ("1", "true")
        with self.hub._lock:
            repo = self._repo(repo_key, write=True)
            base = repo.resolve(revision)
            if revision not in repo.branches:
                raise _HubError(400, f"Cannot commit to '{revision}': not a branch")
            parent = header.get("parentCommit")
            if parent and parent != base.oid:
                raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(base.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value") or {}
                path = _check_path(value.get("path"))
                if key == "file":
                    raw = value.get("content", "")
                    content = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                    files[path] = Blob(content, lfs=False)
                elif key == "lfsFile":
                    data = repo.lfs_objects.get(value.get("oid"))
                    if data is None or ("size" in value and len(data) != int(value["size"])):
                        raise _HubError(422, f"LFS object {value.get('oid')} for '{path}' was never uploaded")
                    files[path] = Blob(data, lfs=True)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise _HubError(
                            404, f"A file with this name doesn't exist: {path}", code="EntryNotFound"
                        )
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise _HubError(404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound")
                    for p in doomed:
                        del files[p]
                else:
                    raise _HubError(400, f"Unknown commit operation: {key!r}")
            target, pr_url = revision, None
            if create_pr:
                repo.nb_prs += 1
                target = f"refs/pr/{repo.nb_prs}"
                pr_url = f"{self._repo_url(repo)}/discussions/{repo.nb_prs}"
            commit = self.hub._add_commit(
                repo, target, files, base.oid, header.get("summary") or "", header.get("description") or ""
            )
        self._send(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                "commitMessage": commit.title,
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            },
        )

    def _lfs_batch(self, body: bytes, repo_key) -> None:
        payload = json.loads(body or b"{}")
        operation = payload.get("operation")
        with self.hub._lock:
            repo = self._repo(repo_key, write=operation == "upload")
            stored = dict(repo.lfs_objects)
        base = f"{self.hub.endpoint}/__test_lfs/{repo.repo_type}/{repo.repo_id}"
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not isinstance(oid, str) or len(oid) != 64 or not _HEX_RE.match(oid) or not isinstance(size, int):
                answer["error"] = {"code": 422, "message": "Invalid oid or size"}
                answer["oid"], answer["size"] = str(oid), size if isinstance(size, int) else 0
            elif operation == "download":
                if oid in stored:
                    answer["actions"] = {"download": {"href": f"{base}/{oid}", "expires_in": 3600}}
                else:
                    answer["error"] = {"code": 404, "message": "Object does not exist"}
            elif oid not in stored:
                answer["actions"] = {
                    "upload": {"href": f"{base}/{oid}", "expires_in": 3600},
                    "verify": {"href": f"{base}/verify", "expires_in": 3600},
                }
            objects.append(answer)
        self._send(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, body: bytes, repo_key, oid: str) -> None:
        # Like a pre-signed storage URL: no Authorization header is sent, none is required.
        digest = hashlib.sha256(body).hexdigest()
        if digest != oid:
            raise _HubError(400, f"Uploaded content has sha256 {digest}, expected {oid}")
        with self.hub._lock:
            repo = self.hub._repos.get(repo_key)
            if repo is None:
                raise _HubError(404, "Repository not found", code="RepoNotFound")
            repo.lfs_objects[oid] = body
        self._send(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _lfs_download(self, body: bytes, repo_key, oid: str) -> None:
        with self.hub._lock:
            repo = self._repo(repo_key)
            data = repo.lfs_objects.get(oid)
        if data is None:
            raise _HubError(404, "Object does not exist")
        self._send(200, data)

    def _lfs_verify(self, body: bytes, repo_key) -> None:
        payload = json.loads(body or b"{}")
        with self.hub._lock:
            repo = self._repo(repo_key, write=True)
            data = repo.lfs_objects.get(payload.get("oid"))
        if data is None or len(data) != payload.get("size"):
            raise _HubError(404, f"LFS object {payload.get('oid')} not found or of the wrong size")
        self._send(200, {"success": True})

    def _xet_token(self, body: bytes) -> None:
        raise _HubError(501, "This test hub does not implement Xet storage: run the client with HF_HUB_DISABLE_XET=1")

    # -- downloads -----------------------------------------------------------------------------

    def _resolve(self, body: bytes, repo_key, revision: str, path: str, truncate: bool = False) -> None:
        with self.hub._lock:
            repo = self._repo(repo_key)
            commit = repo.resolve(revision)
            blob = commit.files.get(path)
        if blob is None:
            headers = {"X-Repo-Commit": commit.oid}  # lets the client cache the file's absence
            raise _HubError(404, f"Entry not found: {path}", code="EntryNotFound", headers=headers)
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{blob.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)})
        data, status = blob.content, 200
        range_header = self.headers.get("Range")
        if range_header:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if match is None or match.groups() == ("", ""):
                unsatisfiable = {"Content-Range": f"bytes */{blob.size}"}
                raise _HubError(416, f"Invalid range: {range_header}", headers=unsatisfiable)
            first, last = match.groups()
            if first == "":  # suffix range: the last N bytes
                start, end = max(0, blob.size - int(last)), blob.size - 1
            else:
                start, end = int(first), min(int(last) if last else blob.size - 1, blob.size - 1)
            if start >= blob.size or start > end:
                raise _HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{blob.size}"})
            data, status = blob.content[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
        if truncate:  # injected drop: announce the full length, send half of it
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            return
        self._send(status, data, headers)


def _check_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/"):
        raise _HubError(400, f"Invalid path in commit: {path!r}")
    parts = path.rstrip("/").split("/")
    if any(p in ("", ".", "..", ".git") for p in parts):
        raise _HubError(400, f"Invalid path in commit: {path!r}")
    return path


# ----------------------------------------------------------------------------------------------
# Public server object
# ----------------------------------------------------------------------------------------------


class HubServer:
    """An in-memory Hub on 127.0.0.1 with an OS-chosen port; see the module docstring.

    Args:
        user: the account behind every valid token (namespace of repos created without one).
        token: the only accepted token; None accepts any non-empty bearer token.
        lfs: when False, preupload answers "regular" for every file (no LFS, hence no Xet).
        lfs_threshold: files of at least this many bytes are LFS (besides .gitattributes rules
            and binary samples).
        tree_page_size: page size of tree and commit listings (the Hub uses 1000).
        gitattributes: seed each new repo with an initial commit holding a `.gitattributes`
            (as the Hub does); else new repos start with an empty initial commit.
    """

    def __init__(
        self,
        *,
        user: str = DEFAULT_USER,
        token: str | None = None,
        lfs: bool = True,
        lfs_threshold: int = LFS_THRESHOLD,
        tree_page_size: int = 1000,
        gitattributes: bool = True,
        host: str = "127.0.0.1",
    ):
        self.user = user
        self.token = token
        self.lfs = lfs
        self.lfs_threshold = lfs_threshold
        self.tree_page_size = tree_page_size
        self.gitattributes = gitattributes
        self.host = host
        self.errors: list[str] = []  # tracebacks of unexpected server-side exceptions
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._injections: list[Injection] = []
        self._requests: list[RequestRecord] = []
        self._request_ids = itertools.count(1)
        self._commit_counter = itertools.count(1)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> HubServer:
        if self._httpd is not None:
            raise RuntimeError("HubServer already started")
        self._httpd = _HTTPServer((self.host, 0), _Handler, self)
        self.port = self._httpd.server_address[1]
        self.endpoint = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection and join every server thread."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        self._thread.join(timeout)
        httpd.server_close()
        stuck = httpd.close_all(timeout)
        if stuck or self._thread.is_alive():
            raise RuntimeError(f"test hub threads did not stop: {stuck}")

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    # -- failure injection ---------------------------------------------------------------------

    def fail(
        self, route: str, status: int = 500, *, times: int | None = None, method: str | None = None,
        message: str = "Injected failure (test hub)", code: str | None = None,
    ) -> Injection:
        """Answer `status` on `route` (optionally only for `method`), `times` times or until removed.

        `code` sets X-Error-Code, which the client maps to its exceptions (RepoNotFound, EntryNotFound...)."""
        injection = Injection(route, "error", status=status, method=method, times=times, message=message, code=code)
        return self._arm(injection)

    def drop(
        self, route: str, *, times: int | None = None, method: str | None = None, after_bytes: int | None = None
    ) -> Injection:
        """Reset the connection mid-request on `route`: after reading `after_bytes` of the request body
        (default: half its Content-Length); on a `resolve` GET, after sending half the file."""
        return self._arm(Injection(route, "drop", method=method, times=times, after_bytes=after_bytes))

    def clear_failures(self) -> None:
        with self._lock:
            self._injections.clear()

    def _arm(self, injection: Injection) -> Injection:
        if injection.route not in ROUTES:
            raise ValueError(f"Unknown route {injection.route!r}; expected one of {sorted(ROUTES)}")
        injection._hub = self
        with self._lock:
            self._injections.append(injection)
        return injection

    def _remove_injection(self, injection: Injection) -> None:
        with self._lock:
            if injection in self._injections:
                self._injections.remove(injection)

    def _take_injection(self, route: str | None, method: str) -> Injection | None:
        with self._lock:
            for injection in self._injections:
                if injection.route == route and injection.method in (None, method):
                    injection.hits += 1
                    if injection.times is not None:
                        injection.times -= 1
                        if injection.times <= 0:
                            self._injections.remove(injection)
                    return injection
        return None

    # -- request log ---------------------------------------------------------------------------

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def calls(self, route: str | None = None, method: str | None = None) -> list[tuple[str, str]]:
        """(method, path) of the logged requests, optionally filtered by route name and method."""
        return [
            (r.method, r.path)
            for r in self.requests
            if (route is None or r.route == route) and (method is None or r.method == method)
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- storage -------------------------------------------------------------------------------

    def _new_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
        files = {".gitattributes": Blob(_GITATTRIBUTES.encode())} if self.gitattributes else {}
        self._add_commit(repo, "main", files, None, "initial commit", "")
        self._repos[(repo_type, repo_id)] = repo
        return repo

    def _add_commit(
        self, repo: Repo, branch: str, files: dict[str, Blob], parent: str | None, title: str, description: str
    ) -> Commit:
        listing = "".join(f"{p} {b.git_oid}\n" for p, b in sorted(files.items()))
        seed = f"{repo.repo_id}\n{parent}\n{title}\n{next(self._commit_counter)}\n{time.time_ns()}\n{listing}"
        oid = hashlib.sha1(seed.encode()).hexdigest()
        commit = Commit(oid, (parent,) if parent else (), dict(files), title, description, _now())
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit

    def _wants_lfs(self, path: str, size: int, sample: bytes, rules: list[tuple[str, bool]]) -> bool:
        if not self.lfs or size == 0:
            return False
        if size >= self.lfs_threshold or b"\x00" in sample:
            return True
        lfs = False
        for pattern, value in rules:
            if _pattern_matches(pattern, path):
                lfs = value
        return lfs

    def _last_commit(self, repo: Repo, commit: Commit, path: str) -> Commit:
        def state(c: Commit):
            blob = c.files.get(path)
            return blob.git_oid if blob is not None else _tree_oid(c.files, path)

        current = commit
        while current.parents:
            parent = repo.commits[current.parents[0]]
            if state(parent) != state(current):
                return current
            current = parent
        return current

    def _get(self, repo_id: str, repo_type: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r} on the test hub")
        return repo

    # -- inspection and seeding, for tests -----------------------------------------------------

    def repo_ids(self, repo_type: str = "model") -> list[str]:
        with self._lock:
            return sorted(rid for rtype, rid in self._repos if rtype == repo_type)

    def is_private(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return self._get(repo_id, repo_type).private

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """Commit oid that `revision` points to."""
        with self._lock:
            return self._get(repo_id, repo_type).resolve(revision).oid

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Path -> content of every file at `revision`."""
        with self._lock:
            return {p: b.content for p, b in self._get(repo_id, repo_type).resolve(revision).files.items()}

    def lfs_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> set[str]:
        """Paths stored with LFS at `revision`."""
        with self._lock:
            return {p for p, b in self._get(repo_id, repo_type).resolve(revision).files.items() if b.lfs}

    def history(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        """Commit oids from `revision` back to the initial commit."""
        with self._lock:
            repo = self._get(repo_id, repo_type)
            commit, oids = repo.resolve(revision), []
            while True:
                oids.append(commit.oid)
                if not commit.parents:
                    return oids
                commit = repo.commits[commit.parents[0]]

    def seed_repo(
        self, repo_id: str, files: dict[str, bytes | str] | None = None, *, private: bool = False,
        repo_type: str = "model", lfs_paths: tuple[str, ...] = (), message: str = "seed",
    ) -> str:
        """Create (if needed) a repo server-side and commit `files` to main; returns the commit oid."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id)) or self._new_repo(repo_type, repo_id, private)
            base = repo.resolve("main")
            new_files = dict(base.files)
            for path, content in (files or {}).items():
                data = content.encode() if isinstance(content, str) else content
                lfs = path in lfs_paths
                if lfs:
                    repo.lfs_objects[hashlib.sha256(data).hexdigest()] = data
                new_files[path] = Blob(data, lfs=lfs)
            return self._add_commit(repo, "main", new_files, base.oid, message, "").oid

    # -- client helpers ------------------------------------------------------------------------

    @property
    def default_token(self) -> str:
        return self.token or DEFAULT_TOKEN

    def api(self, token: str | bool | None = None):
        """An `HfApi` bound to this server (authenticated with `default_token` unless told otherwise)."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.default_token if token is None else token)

    def client_env(self, hf_home: str | os.PathLike, token: str | None = None, base: dict | None = None) -> dict:
        """Environment for a subprocess client: this endpoint, an HF_HOME of its own, a token, no Xet."""
        env = dict(os.environ if base is None else base)
        for var in (
            "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
            "TRANSFORMERS_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH", "HF_HUB_DISABLE_IMPLICIT_TOKEN",
            "HF_HUB_ENABLE_HF_TRANSFER", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_ETAG_TIMEOUT",
        ):
            env.pop(var, None)
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HOME=str(Path(hf_home)),
            HF_TOKEN=token or self.default_token,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_SYMLINKS_WARNING="1",
        )
        return env


@contextlib.contextmanager
def disable_xet():
    """Make the in-process `huggingface_hub` use the LFS protocol instead of Xet (read at call time)."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = previous


if pytest is not None:

    @pytest.fixture
    def hub_server():
        """A running HubServer with Xet disabled in-process; stopped (and checked for leaks) afterwards."""
        from huggingface_hub.utils import close_session

        with HubServer() as server, disable_xet():
            yield server
        close_session()  # drop the client's pooled keep-alive connections to the dead port
        assert not server.errors, "test hub raised:\n" + "\n".join(server.errors)
