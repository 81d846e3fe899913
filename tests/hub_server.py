"""A minimal local Hugging Face Hub for tests: the HTTP API huggingface_hub and datasets need to push and download
model and dataset repositories.

Usage from a test module (``tests/`` is on ``sys.path`` under pytest)::

    from hub_server import hub_environment, local_hub  # noqa: F401  (local_hub is a fixture)

    def test_push(local_hub, tmp_path):  # noqa: F811
        environment = hub_environment(tmp_path / "hf_home", local_hub.url)
        subprocess.run([sys.executable, "push_something.py"], env=environment, check=True, timeout=120)
        assert "config.json" in local_hub.files("me/model")
        assert "README.md" in local_hub.files("me/data", repo_type="dataset")

The tests run offline (``HF_HUB_OFFLINE=1``), and huggingface_hub reads ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT``
when it is imported: talk to the server from a subprocess whose environment comes from ``hub_environment``.

The routes follow huggingface_hub's own client code (``hf_api.py``, ``_commit_api.py``, ``file_download.py``,
``hf_file_system.py``). ``{type}`` is ``models`` or ``datasets``, and ``{prefix}`` is empty for a model and
``datasets/`` for a dataset, as on the Hub:

* ``POST /api/repos/create``: ``"type"`` absent, ``"model"`` or ``"dataset"``
* ``POST /api/{type}/{repo}/preupload/{rev}``: dataset ``*.parquet`` files are "lfs", every other file "regular"
  (its content comes inline in the commit)
* ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` (LFS uploads, "basic" transfer) and ``PUT /lfs-upload/{oid}``,
  the upload URL it hands out, which needs no token (it stands for a presigned storage URL)
* ``POST /api/{type}/{repo}/commit/{rev}``: NDJSON, a header line then ``file`` / ``lfsFile`` / ``deletedFile`` /
  ``deletedFolder`` lines
* ``GET /api/{type}/{repo}`` and ``GET /api/{type}/{repo}/revision/{rev}``: repo info (``sha``, ``siblings``)
* ``GET /api/{type}/{repo}/tree/{rev}[/{path}]``: file listing (``recursive`` supported, one page)
* ``POST /api/{type}/{repo}/paths-info/{rev}``: the entries of the given paths that exist
* ``POST /api/validate-yaml``: parses the README front matter
* ``HEAD`` / ``GET /{prefix}{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag``, ``Content-Length``; a
  missing file is a 404 with ``X-Error-Code: EntryNotFound``
* ``GET /api/agent-harnesses``: an empty registry (huggingface_hub fetches it for its user agent)

Anything else answers 501 and prints the request to stderr, so that a missing route is obvious. Only model and
dataset repos on branch ``main`` (or a commit sha) are supported: no Xet storage (``hub_environment`` turns it off),
no pull requests, no other branches, no Spaces.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

DEFAULT_MAX_REQUESTS = 1000
_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_API_REPO_ROUTE = re.compile(
    rf"^/api/(?P<type>model|dataset)s/{_REPO}"
    r"(?:/(?P<action>preupload|commit|revision|tree|paths-info)/(?P<rev>[^/]+)(?:/(?P<path>.*))?)?$"
)
# The Hub reserves the "datasets" namespace, so "/datasets/..." always names a dataset.
_RESOLVE_ROUTE = re.compile(rf"^/(?:(?P<type>dataset)s/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_LFS_BATCH_ROUTE = re.compile(rf"^/(?:(?P<type>dataset)s/)?{_REPO}\.git/info/lfs/objects/batch$")
_LFS_UPLOAD_ROUTE = re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$")
# Where a repo lives, below the endpoint and below /api/: "me/model" or "datasets/me/data".
_URL_PREFIXES = {"model": "", "dataset": "datasets/"}
# Files the preupload answer sends through LFS. The Hub decides by .gitattributes and content; here model files
# stay "regular" (inline in the commit, as the model tests expect), while dataset shards must go through LFS:
# datasets deletes each shard's temporary file right after its preupload, so it relies on the upload happening there.
_LFS_SUFFIXES = {"model": (), "dataset": (".parquet",)}
# POSTs that only read: allowed without a token, as on the Hub for a public repo.
_READ_ONLY_POSTS = re.compile(r"^/api/(validate-yaml|(model|dataset)s/.+/paths-info/.+)$")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def hub_environment(hf_home: Path, endpoint: str, token: str | None = "dummy") -> dict[str, str]:
    """``os.environ`` made online and aimed at ``endpoint``, for a subprocess.

    It gets its own empty Hugging Face home and cache under ``hf_home``, no telemetry (whose agent registry
    would be fetched from the default endpoint otherwise), no proxy for 127.0.0.1, and only the given token:
    ``token=None`` means no credentials at all.
    """
    environment = dict(
        os.environ,
        HF_ENDPOINT=endpoint,
        HF_HUB_OFFLINE="0",
        HF_HOME=str(hf_home),
        HF_HUB_CACHE=str(hf_home / "hub"),
        HF_MODULES_CACHE=str(hf_home / "modules"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        # hf_xet, when installed, would upload LFS files through Xet storage, which this server does not speak.
        HF_HUB_DISABLE_XET="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    # datasets and transformers have offline flags of their own, on top of HF_HUB_OFFLINE.
    for name in ("TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN_PATH", "HF_TOKEN"):
        environment.pop(name, None)
    if token is not None:
        environment["HF_TOKEN"] = token
    return environment


def repo_key(repo_id: str, repo_type: str | None = "model") -> str:
    """The key of a repo in ``LocalHub.repos``: its URL path, so a model and a dataset may share a name."""
    return _URL_PREFIXES[repo_type or "model"] + repo_id


def git_blob_oid(content: bytes) -> str:
    """The git blob sha1 of ``content``: what huggingface_hub compares to skip unchanged files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    """A model or dataset repository: one linear history of snapshots on ``main``."""

    private: bool
    repo_type: str = "model"
    # commit sha -> {path: content}; insertion order is history order.
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    @property
    def head(self) -> str:
        return next(reversed(self.snapshots))

    def commit(self, files: dict[str, bytes], message: str) -> str:
        parent = next(reversed(self.snapshots), "")
        digest = hashlib.sha1(f"{parent}\n{message}\n{time.time_ns()}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_oid(files[path])}\n".encode())
        sha = digest.hexdigest()
        self.snapshots[sha] = files
        self.messages[sha] = message
        return sha

    def resolve(self, revision: str) -> str | None:
        """The commit sha a revision names, or None."""
        if revision == "main":
            return self.head
        return revision if revision in self.snapshots else None


class HubError(Exception):
    """An error answer: status, message, Hub error code (``X-Error-Code``), extra headers and JSON fields."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 fields: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.fields = headers or {}, fields or {}


class LocalHub:
    """A Hub-compatible HTTP server on 127.0.0.1 in a background thread, with in-memory storage.

    Args:
        required_token: when set, every request must carry ``Authorization: Bearer <required_token>``, else
            401. Otherwise any bearer token is accepted; writes without one answer 401, as on the Hub.
        max_requests: requests served before the server answers 410 to everything (a runaway client fails).
    """

    def __init__(self, *, required_token: str | None = None, max_requests: int = DEFAULT_MAX_REQUESTS):
        self.required_token = required_token
        self.max_requests = max_requests
        self.repos: dict[str, Repo] = {}  # by repo_key(): "me/model", "datasets/me/data"
        self.lfs_objects: dict[str, bytes] = {}  # uploaded LFS contents by sha256, shared by all repos
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) in arrival order
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        # A short poll interval makes close() quick: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="local-hub",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of a repo at a revision: {path: content}."""
        with self._lock:
            repo = self._repo(repo_key(repo_id, repo_type))
            return dict(repo.snapshots[self._sha(repo, revision)])

    # -- request handling (called from handler threads) ---------------------------------------------------

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answers one request: (status, headers, body)."""
        split = urlsplit(target)
        path, query = split.path, parse_qs(split.query)
        with self._lock:
            if len(self.requests) >= self.max_requests:
                raise HubError(HTTPStatus.GONE, f"local hub request limit ({self.max_requests}) reached")
            self._check_token(method, path, headers.get("Authorization"))
            if method == "POST" and path == "/api/repos/create":
                return _json(self._create_repo(json.loads(body)))
            if method == "POST" and path == "/api/validate-yaml":
                return _validate_yaml(json.loads(body)["content"])
            if method == "GET" and path == "/api/agent-harnesses":
                return _json({"standardEnvVars": [], "harnesses": {}})
            if (match := _API_REPO_ROUTE.match(path)) is not None:
                return self._api_repo(method, match, query, body)
            if method == "POST" and (match := _LFS_BATCH_ROUTE.match(path)) is not None:
                self._repo(repo_key(unquote(match["repo"]), match["type"]))
                return _json(self._lfs_batch(json.loads(body)))
            if method == "PUT" and (match := _LFS_UPLOAD_ROUTE.match(path)) is not None:
                return self._lfs_upload(match["oid"], body)
            if method in ("GET", "HEAD") and (match := _RESOLVE_ROUTE.match(path)) is not None:
                key = repo_key(unquote(match["repo"]), match["type"])
                return self._resolve(key, unquote(match["rev"]), unquote(match["path"]))
        raise NotImplementedError

    def _check_token(self, method: str, path: str, authorization: str | None) -> None:
        if _LFS_UPLOAD_ROUTE.match(path):
            return  # the client sends no credentials to a storage URL
        token = None
        if authorization and authorization.startswith("Bearer "):
            token = authorization[len("Bearer "):]
        if self.required_token is not None and token != self.required_token:
            raise HubError(HTTPStatus.UNAUTHORIZED, "Invalid credentials in Authorization header")
        is_write = method == "POST" and not _READ_ONLY_POSTS.match(path)
        if is_write and token is None:
            raise HubError(HTTPStatus.UNAUTHORIZED, "You must be authenticated to write to the Hub")

    def _api_repo(self, method: str, match: re.Match, query: dict, body: bytes) -> tuple[int, dict, bytes]:
        """The routes below ``/api/models/{repo}`` and ``/api/datasets/{repo}``: one handler per action."""
        repo_id, action = unquote(match["repo"]), match["action"]
        key = repo_key(repo_id, match["type"])
        revision, folder = unquote(match["rev"] or "main"), unquote(match["path"] or "")
        repo = self._repo(key)
        if method == "GET" and action in (None, "revision") and not folder:
            return _json(self._repo_info(repo_id, repo, revision))
        if method == "GET" and action == "tree":
            recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
            return _json(self._tree(repo, revision, folder, recursive))
        if method == "POST" and action == "paths-info" and not folder:
            # A form body: "paths" once per path.
            paths = parse_qs(body.decode(), keep_blank_values=True).get("paths", [])
            return _json(self._paths_info(repo, revision, paths))
        if method == "POST" and action == "preupload":
            return _json(self._preupload(repo, revision, json.loads(body)))
        if method == "POST" and action == "commit" and "create_pr" not in query:
            return _json(self._commit(key, repo, revision, body))
        raise NotImplementedError

    def _repo(self, key: str) -> Repo:
        if key not in self.repos:
            raise HubError(HTTPStatus.NOT_FOUND, f"Repository {key} not found", "RepoNotFound")
        return self.repos[key]

    @staticmethod
    def _sha(repo: Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _create_repo(self, payload: dict) -> dict:
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIXES:
            raise NotImplementedError
        repo_id = "/".join(part for part in (payload.get("organization"), payload["name"]) if part)
        key = repo_key(repo_id, repo_type)
        # huggingface_hub reads the repo type back from the URL's "datasets/" prefix.
        url = f"{self.url}/{key}"
        if key in self.repos:
            # huggingface_hub's create_repo(exist_ok=True) reads the url from this 409 answer.
            raise HubError(HTTPStatus.CONFLICT, f"You already created this {repo_type} repo", fields={"url": url})
        repo = Repo(private=payload.get("visibility") == "private", repo_type=repo_type)
        # Like the Hub, a new repo starts with one commit holding .gitattributes.
        repo.commit({".gitattributes": _GITATTRIBUTES}, "initial commit")
        self.repos[key] = repo
        return {"url": url, "name": repo_id, "id": repo_id}

    def _repo_info(self, repo_id: str, repo: Repo, revision: str) -> dict:
        """What ``model_info`` / ``dataset_info`` read: the commit sha and the files (``siblings``)."""
        sha = self._sha(repo, revision)
        files = repo.snapshots[sha]
        return {
            "id": repo_id,
            **({"modelId": repo_id} if repo.repo_type == "model" else {}),
            "sha": sha,
            "private": repo.private,
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "tags": [],
            "siblings": [
                {"rfilename": path, "size": len(content), "blobId": git_blob_oid(content)}
                for path, content in sorted(files.items())
            ],
        }

    def _tree(self, repo: Repo, revision: str, folder: str, recursive: bool) -> list[dict]:
        files = repo.snapshots[self._sha(repo, revision)]
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries: dict[str, dict] = {}
        for path, content in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            # Non-recursive: only the first level below the folder; recursive: every folder on the way.
            for level in range(1, len(parts) if recursive else min(len(parts), 2)):
                directory = prefix + "/".join(parts[:level])
                entries.setdefault(directory, _folder_entry(directory))
            if recursive or len(parts) == 1:
                entries[path] = _file_entry(path, content)
        if prefix and not entries:
            raise HubError(HTTPStatus.NOT_FOUND, f"{folder} does not exist", "EntryNotFound")
        return list(entries.values())

    def _paths_info(self, repo: Repo, revision: str, paths: list[str]) -> list[dict]:
        """The tree entries of the paths that exist, files or folders; the others are left out, as on the Hub."""
        files = repo.snapshots[self._sha(repo, revision)]
        entries = []
        for path in dict.fromkeys(path.strip("/") for path in paths):
            if path in files:
                entries.append(_file_entry(path, files[path]))
            elif any(name.startswith(path + "/") for name in files):
                entries.append(_folder_entry(path))
        return entries

    def _preupload(self, repo: Repo, revision: str, payload: dict) -> dict:
        sha = self._sha(repo, revision)
        files = repo.snapshots[sha]
        answers = []
        for item in payload["files"]:
            path, content = item["path"], files.get(item["path"])
            lfs = path.endswith(_LFS_SUFFIXES[repo.repo_type])
            # The client skips an unchanged file by this oid: sha256 for LFS files, the git blob sha1 otherwise.
            oid = None
            if content is not None:
                oid = hashlib.sha256(content).hexdigest() if lfs else git_blob_oid(content)
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return {"files": answers, "commitOid": sha}

    def _lfs_batch(self, payload: dict) -> dict:
        """The LFS batch answer: an upload URL for each object not stored yet (no ``actions``: already there)."""
        if payload.get("operation") != "upload":
            raise NotImplementedError
        objects = []
        for item in payload["objects"]:
            entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{item['oid']}"}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def _lfs_upload(self, oid: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(HTTPStatus.BAD_REQUEST, f"the uploaded content does not have sha256 {oid}")
        self.lfs_objects[oid] = body
        return HTTPStatus.OK, {}, b""

    def _commit(self, key: str, repo: Repo, revision: str, body: bytes) -> dict:
        if repo.resolve(revision) != repo.head:
            raise NotImplementedError  # only commits on top of main
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(HTTPStatus.BAD_REQUEST, "the commit payload must start with a header line")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, repo.head):
            raise HubError(HTTPStatus.PRECONDITION_FAILED, "parentCommit is not the head of main")
        files = dict(repo.snapshots[repo.head])
        for line in lines[1:]:
            _apply_operation(files, line["key"], line["value"], self.lfs_objects)
        sha = repo.commit(files, header["summary"])
        return {"commitUrl": f"{self.url}/{key}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}

    def _resolve(self, key: str, revision: str, path: str) -> tuple[int, dict[str, str], bytes]:
        repo = self._repo(key)
        sha = self._sha(repo, revision)
        content = repo.snapshots[sha].get(path)
        if content is None:
            # huggingface_hub caches the absence of a file under the commit the 404 names.
            raise HubError(HTTPStatus.NOT_FOUND, f"Entry not found: {path}", "EntryNotFound",
                           {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(content)}"'}
        headers["Content-Type"] = "application/octet-stream"
        return HTTPStatus.OK, headers, content


def _file_entry(path: str, content: bytes) -> dict:
    """A file as ``list_repo_tree`` and ``get_paths_info`` read it (``RepoFile``)."""
    return {"type": "file", "path": path, "size": len(content), "oid": git_blob_oid(content)}


def _folder_entry(path: str) -> dict:
    """A folder as ``list_repo_tree`` and ``get_paths_info`` read it (``RepoFolder``); any stable oid will do."""
    return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}


def _apply_operation(files: dict[str, bytes], key: str, value: dict, lfs_objects: Mapping[str, bytes]) -> None:
    """Applies one NDJSON commit line to a snapshot being built; ``lfsFile`` lines name uploaded LFS objects."""
    if key == "file" and value.get("encoding") == "base64":
        files[value["path"]] = base64.b64decode(value["content"])
    elif key == "lfsFile" and value.get("algo") == "sha256":
        if value["oid"] not in lfs_objects:
            raise HubError(HTTPStatus.BAD_REQUEST, f"LFS object {value['oid']} was never uploaded")
        files[value["path"]] = lfs_objects[value["oid"]]
    elif key == "deletedFile":
        if files.pop(value["path"], None) is None:
            raise HubError(HTTPStatus.NOT_FOUND, "A file with this name doesn't exist", "EntryNotFound")
    elif key == "deletedFolder":
        prefix = value["path"].rstrip("/") + "/"
        for path in [path for path in files if path.startswith(prefix)]:
            del files[path]
    else:
        # Another encoding or hash: the client never sends them.
        raise NotImplementedError


def _validate_yaml(content: str) -> tuple[int, dict[str, str], bytes]:
    match = _FRONT_MATTER.match(content)
    try:
        metadata = yaml.safe_load(match.group(1)) if match else {}
    except yaml.YAMLError as error:
        return _validation_error(f"invalid YAML: {error}")
    if metadata is not None and not isinstance(metadata, dict):
        return _validation_error("the metadata must be a mapping")
    return _json({"errors": [], "warnings": []})


def _validation_error(message: str) -> tuple[int, dict[str, str], bytes]:
    return _json({"errors": [{"message": message}], "warnings": []}, HTTPStatus.BAD_REQUEST)


def _json(payload, status: int = HTTPStatus.OK) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while (size := int(handler.rfile.readline().split(b";")[0], 16)) > 0:
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        handler.rfile.readline()
        return b"".join(chunks)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer carries Content-Length
        timeout = 10  # idle keep-alive connections end, so handler threads do not linger

        def _answer(self) -> None:
            body = _read_body(self)
            try:
                status, headers, payload = hub.handle(self.command, self.path, self.headers, body)
            except HubError as error:
                status, headers, payload = _json({"error": error.message, **error.fields}, error.status)
                headers.update(error.headers, **{"X-Error-Message": error.message})
                if error.code:
                    headers["X-Error-Code"] = error.code
            except NotImplementedError:
                message = f"local hub: 501 not implemented: {self.command} {self.path}"
                print(message, file=sys.stderr, flush=True)
                status, headers, payload = _json({"error": message}, HTTPStatus.NOT_IMPLEMENTED)
            hub.record(self.command, self.path, int(status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        def log_message(self, *args) -> None:
            pass  # the request log is hub.requests; stderr stays for 501s

    return Handler


@pytest.fixture
def local_hub() -> Iterator[LocalHub]:
    """A fresh :class:`LocalHub` for one test, shut down at its end.

    Set ``local_hub.required_token`` to make it answer 401 to any other token."""
    with LocalHub() as hub:
        yield hub


__all__ = ["LocalHub", "git_blob_oid", "hub_environment", "local_hub", "repo_key"]
