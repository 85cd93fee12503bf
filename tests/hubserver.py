"""A small Hugging Face Hub-compatible HTTP server for tests (standard library only).

It implements just enough of the Hub's HTTP API for the real `huggingface_hub` client (2.x, with
`HF_HUB_DISABLE_XET=1`) and timm's `hf-hub:` loader to run end to end:

* repos: create, info (``/api/models/{id}[/revision/{rev}]``), tree listing, YAML validation;
* uploads: ``preupload`` (regular vs LFS), the git-lfs ``batch`` API with PUT + verify, ndjson ``commit``;
* downloads: ``HEAD``/``GET`` ``/{id}/resolve/{rev}/{path}``; LFS files answer with a 302 to a second
  "CDN" origin, as the real Hub does, so the client's cross-origin logic (auth stripping) is exercised;
* test hooks: a request log, fault injection (HTTP status or a dropped connection) and commit history.

Point a client at it with ``HF_ENDPOINT=<server.url>`` and ``HF_HUB_DISABLE_XET=1``, both set *before*
``huggingface_hub`` is imported (it reads them at import time).

Run standalone: ``python tests/hubserver.py --root DIR --port 8080``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubError", "HubServer", "git_blob_sha1", "main"]

# Files stored through LFS whatever their size; mirrors the Hub's default .gitattributes.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npz", ".pkl", ".zip")
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}

_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)"
                  r"(?:/(revision|tree|paths-info|preupload|commit)/([^/]+)(/.*)?)?$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")
_LFS_API = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+?)\.git/info/lfs/objects/(batch|verify)$")
_LFS_OBJECT = re.compile(r"^/lfs-objects/([0-9a-f]{64})$")


def git_blob_sha1(data: bytes) -> str:
    """Git's object id of a blob (what the Hub calls the `oid` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file committed to git in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubError(Exception):
    """An error answer; `code` goes to `X-Error-Code`, which the client maps to its exception classes."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class _Fault:
    pattern: re.Pattern
    status: int | None
    times: int
    method: str | None
    message: str | None = None
    retry_after: int | None = None


class HubServer:
    """Hub-compatible server storing repos under `root`; see the module docstring.

    `lfs_threshold`: files at least this big (or with an LFS suffix, or binary) are uploaded through LFS.
    `token`: when set, every Hub API call must carry `Authorization: Bearer <token>` (else 401).
    """

    DEFAULT_NAMESPACE = "user"  # used when create_repo is given a bare name

    def __init__(self, root: Path, *, lfs_threshold: int = 1_000_000, token: str | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root)
        self.lfs_threshold, self.token, self.host, self.port = lfs_threshold, token, host, port
        self.requests: list[dict] = []  # one record per request: method, path, origin, authorization, status, at (monotonic)
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._servers: list[ThreadingHTTPServer] = []
        self.url = self.cdn_url = ""
        for d in ("repos", "objects", "lfs", "tmp"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        # Repos survive a restart on the same root: state is a JSON file per repo.
        self._repos: dict[tuple[str, str], dict] = {}
        for f in (self.root / "repos").rglob("*.json"):
            repo = json.loads(f.read_text())
            self._repos[(repo["type"], repo["id"])] = repo

    # ----------------------------------------------------------------- lifecycle and test hooks
    def start(self) -> HubServer:
        """Bind the Hub origin (`url`) and a second "CDN" origin (`cdn_url`) serving LFS objects."""
        handler = type("Handler", (_Handler,), {"hub": self})
        for port in (self.port, 0):
            httpd = ThreadingHTTPServer((self.host, port), handler)
            httpd.daemon_threads = True
            threading.Thread(target=httpd.serve_forever, name=f"hubserver-{port}", daemon=True).start()
            self._servers.append(httpd)
        self.url, self.cdn_url = (f"http://{self.host}:{s.server_address[1]}" for s in self._servers)
        return self

    def stop(self) -> None:
        for httpd in self._servers:
            httpd.shutdown()
            httpd.server_close()
        self._servers.clear()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def inject(self, pattern: str, *, status: int | None = 500, times: int = 1, method: str | None = None,
               message: str | None = None, retry_after: int | None = None) -> None:
        """Answer the next `times` requests whose path (with query) matches `pattern` with `status`.

        `status=None` drops the connection without answering (the client sees a protocol error).
        `message`: the error message sent (in `X-Error-Message` and the JSON body), instead of "Injected fault".
        `retry_after`: sent as `Retry-After` (seconds).
        """
        with self._lock:
            self._faults.append(_Fault(re.compile(pattern), status, times, method.upper() if method else None, message,
                                       retry_after))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def commits(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> list[str]:
        """Commit shas reachable from `branch`, newest first."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            shas, sha = [], repo["refs"].get(branch)
            while sha:
                shas.append(sha)
                sha = repo["commits"][sha]["parent"]
            return shas

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if (fault.method in (None, method)) and fault.pattern.search(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ----------------------------------------------------------------- storage
    def _get_repo(self, repo_type: str, repo_id: str) -> dict:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _save(self, repo: dict) -> None:
        path = self.root / "repos" / f"{repo['type']}s" / f"{repo['id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(repo, indent=1))
        os.replace(tmp, path)

    def _resolve(self, repo: dict, rev: str) -> str:
        """Branch name or full commit sha -> commit sha."""
        sha = repo["refs"].get(rev) or (rev if rev in repo["commits"] else None)
        if sha is None:
            raise HubError(404, f"Revision {rev} not found", "RevisionNotFound")
        return sha

    def _store_regular(self, data: bytes) -> dict:
        oid = git_blob_sha1(data)
        self._write_atomic(self.root / "objects" / oid, data)
        return {"oid": oid, "size": len(data), "lfs": None}

    def _lfs_entry(self, sha256: str) -> dict:
        path = self.root / "lfs" / sha256
        if not path.is_file():
            raise HubError(400, f"LFS object {sha256} was not uploaded")
        size = path.stat().st_size
        pointer = lfs_pointer(sha256, size)
        return {"oid": git_blob_sha1(pointer), "size": size,
                "lfs": {"oid": sha256, "size": size, "pointerSize": len(pointer)}}

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = self.root / "tmp" / f"{path.name}.{threading.get_ident()}"
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _commit(self, repo: dict, branch: str, files: dict, message: str) -> str:
        """Record a new commit on `branch` whose tree is `files` (path -> entry)."""
        parent = repo["refs"].get(branch)
        date = _now()
        blob = json.dumps([parent, files, message, date, len(repo["commits"])], sort_keys=True).encode()
        sha = hashlib.sha1(blob).hexdigest()
        repo["commits"][sha] = {"parent": parent, "message": message, "date": date, "files": files}
        repo["refs"][branch] = sha
        self._save(repo)
        return sha

    def _is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        if size == 0:
            return False  # the client uploads empty files as regular anyway
        return size >= self.lfs_threshold or path.lower().endswith(LFS_SUFFIXES) or b"\0" in sample

    def _repo_url(self, repo: dict) -> str:
        return f"{self.url}/{TYPE_PREFIX[repo['type']]}{repo['id']}"

    # ----------------------------------------------------------------- API handlers
    def create_repo(self, body: dict) -> tuple[int, dict]:
        repo_type = body.get("type") or "model"
        if repo_type not in TYPE_PREFIX:
            raise HubError(400, f"Invalid repo type {repo_type}")
        repo_id = f"{body.get('organization') or self.DEFAULT_NAMESPACE}/{body['name']}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                # create_repo(exist_ok=True) swallows this 409 and then still reads "url" from the body.
                # (It retries forever on the text "another conflicting operation is in progress".)
                repo = self._repos[(repo_type, repo_id)]
                return 409, {"error": "You already created this model repo", "url": self._repo_url(repo)}
            private = body.get("private") or body.get("visibility") == "private"
            repo = {"type": repo_type, "id": repo_id, "private": bool(private), "createdAt": _now(),
                    "refs": {}, "commits": {}}
            # Like the Hub, a new repo has one initial commit holding a .gitattributes file.
            self._repos[(repo_type, repo_id)] = repo
            self._commit(repo, "main", {".gitattributes": self._store_regular(GITATTRIBUTES)}, "initial commit")
        return 200, {"url": self._repo_url(repo), "name": repo_id, "id": repo_id}

    def repo_info(self, repo: dict, rev: str, query: dict) -> dict:
        sha = self._resolve(repo, rev)
        commit = repo["commits"][sha]
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, e in sorted(commit["files"].items()):
            sib = {"rfilename": path}
            if blobs:
                sib.update(size=e["size"], blobId=e["oid"])
                if e["lfs"]:
                    sib["lfs"] = {"size": e["size"], "sha256": e["lfs"]["oid"], "pointerSize": e["lfs"]["pointerSize"]}
            siblings.append(sib)
        namespace = repo["id"].split("/")[0]
        return {"_id": hashlib.sha1(repo["id"].encode()).hexdigest()[:24], "id": repo["id"], "author": namespace,
                "sha": sha, "lastModified": commit["date"], "createdAt": repo["createdAt"],
                "private": repo["private"], "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "siblings": siblings}

    def tree(self, repo: dict, rev: str, subpath: str, query: dict) -> list[dict]:
        sha = self._resolve(repo, rev)
        files = repo["commits"][sha]["files"]
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = subpath.strip("/") + "/" if subpath.strip("/") else ""
        out, dirs = [], set()
        for path, e in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            # Directories are implicit in the flat file list: derive them from the paths.
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                dirs.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                out.append(self._file_item(path, e))
        if prefix and not out and not dirs:
            raise HubError(404, f"Entry {subpath} not found", "EntryNotFound", {"X-Repo-Commit": sha})
        return out + [self._dir_item(sha, d) for d in sorted(dirs)]

    def paths_info(self, repo: dict, rev: str, paths: list[str]) -> list[dict]:
        """Entries for the given paths (files or folders); unknown paths are left out, as on the Hub."""
        sha = self._resolve(repo, rev)
        files = repo["commits"][sha]["files"]
        out = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                out.append(self._file_item(path, files[path]))
            elif any(p.startswith(path + "/") for p in files):
                out.append(self._dir_item(sha, path))
        return out

    @staticmethod
    def _file_item(path: str, entry: dict) -> dict:
        item = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
        if entry["lfs"]:
            item["lfs"] = dict(entry["lfs"])
        return item

    @staticmethod
    def _dir_item(sha: str, path: str) -> dict:
        return {"type": "directory", "oid": hashlib.sha1(f"{sha}:{path}".encode()).hexdigest(), "size": 0, "path": path}

    def preupload(self, repo: dict, rev: str, body: dict) -> dict:
        sha = self._resolve(repo, rev)
        files = repo["commits"][sha]["files"]
        answer = []
        for f in body.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            existing = files.get(f["path"])
            # The client skips a file when this oid equals its local one: git sha1 of the
            # content for regular files, sha256 of the content for LFS files.
            oid = None if existing is None else (existing["lfs"]["oid"] if existing["lfs"] else existing["oid"])
            mode = "lfs" if self._is_lfs(f["path"], int(f["size"]), sample) else "regular"
            answer.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": answer, "commitOid": sha}

    def commit(self, repo: dict, branch: str, raw: bytes, query: dict) -> dict:
        if query.get("create_pr", ["0"])[0] not in ("0", "false"):
            raise HubError(400, "create_pr is not supported by the test server")
        if branch not in repo["refs"]:
            raise HubError(404, f"Branch {branch} not found", "RevisionNotFound")
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        header = next((ln["value"] for ln in lines if ln["key"] == "header"), {})
        head = repo["refs"][branch]
        if header.get("parentCommit") not in (None, head):
            raise HubError(412, "A commit has happened since the parent commit; please pull and retry")
        files = dict(repo["commits"][head]["files"])
        for ln in lines:
            key, value = ln["key"], ln["value"]
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, "only base64 file content is supported")
                files[value["path"]] = self._store_regular(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                files[value["path"]] = self._lfs_entry(value["oid"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(folder)]:
                    del files[path]
            elif key != "header":
                raise HubError(400, f"Unsupported commit operation {key!r}")
        message = "\n\n".join(filter(None, [header.get("summary", ""), header.get("description", "")]))
        sha = self._commit(repo, branch, files, message)
        return {"success": True, "commitOid": sha, "commitUrl": f"{self._repo_url(repo)}/commit/{sha}",
                "commitMessage": message, "hookOutput": "", "pullRequestUrl": None}

    def lfs_batch(self, repo: dict, body: dict) -> dict:
        """git-lfs batch API: upload actions point at the CDN origin, like pre-signed S3 URLs."""
        objects = []
        api_base = f"{self._repo_url(repo)}.git/info/lfs/objects"
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            item = {"oid": oid, "size": size, "authenticated": True}
            stored = self.root / "lfs" / oid
            if body.get("operation") == "download":
                if stored.is_file():
                    item["actions"] = {"download": {"href": f"{self.cdn_url}/lfs-objects/{oid}"}}
                else:
                    item["error"] = {"code": 404, "message": "Object does not exist"}
            elif not stored.is_file():  # already stored objects get no actions: the client skips them
                item["actions"] = {"upload": {"href": f"{self.cdn_url}/lfs-objects/{oid}"},
                                   "verify": {"href": f"{api_base}/verify"}}
            objects.append(item)
        return {"transfer": "basic", "objects": objects}

    def lfs_verify(self, body: dict) -> dict:
        path = self.root / "lfs" / str(body.get("oid"))
        if not path.is_file() or path.stat().st_size != int(body.get("size", -1)):
            raise HubError(404, "LFS object not found or wrong size")
        return {"success": True}

    def lfs_put(self, oid: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "sha256 of the uploaded content does not match the object id")
        self._write_atomic(self.root / "lfs" / oid, data)

    def check_auth(self, authorization: str | None, repo: dict | None) -> None:
        """401 like the Hub: no token -> looks like a missing repo; wrong token -> invalid credentials."""
        needed = self.token is not None or (repo is not None and repo["private"])
        if not needed:
            return
        if authorization is None:
            raise HubError(401, "Invalid username or password.", "RepoNotFound")
        if self.token is not None and authorization != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")


# A response as (status, body, headers, content type); built under the hub lock, sent outside it.
Response = tuple[int, bytes, dict, "str | None"]


def _json_response(status: int, payload, headers: dict | None = None, ctype: str = "application/json") -> Response:
    return status, json.dumps(payload).encode(), headers or {}, ctype


def _file_response(data: bytes, headers: dict, range_header: str | None) -> Response:
    """200 with the whole file, or 206 for a single `Range: bytes=a-b` (the client resumes downloads so)."""
    headers = dict(headers, **{"Accept-Ranges": "bytes"})
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", (range_header or "").strip())
    if not m or not (m.group(1) or m.group(2)):
        return 200, data, headers, "application/octet-stream"
    total = len(data)
    if m.group(1):
        start, end = int(m.group(1)), min(int(m.group(2) or total - 1), total - 1)
    else:  # suffix range: the last N bytes
        start, end = max(total - int(m.group(2)), 0), total - 1
    if start >= total or start > end:
        return 416, b"", dict(headers, **{"Content-Range": f"bytes */{total}"}), None
    headers["Content-Range"] = f"bytes {start}-{end}/{total}"
    return 206, data[start:end + 1], headers, "application/octet-stream"


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to `hub`; the class attribute `hub` is set by `HubServer.start`."""

    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def log_message(self, format, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # streamed file uploads
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers, up to the blank line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self, method: str) -> None:
        hub = self.hub
        origin = "hub" if self.server is hub._servers[0] else "cdn"
        record = {"method": method, "path": self.path, "origin": origin,
                  "authorization": self.headers.get("Authorization"), "status": None, "at": time.monotonic()}
        body = self._read_body()  # always drain the body, so that a dropped connection is a clean EOF
        response: Response | None = None
        try:
            fault = hub._take_fault(method, self.path)
            if fault is not None and fault.status is not None:
                raise HubError(fault.status, fault.message or f"Injected fault ({fault.status})",
                               headers={} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)})
            if fault is None:
                response = self._route(method, origin, body)
        except HubError as err:
            headers = dict(err.headers, **{"X-Error-Message": err.message})
            if err.code:
                headers["X-Error-Code"] = err.code
            response = _json_response(err.status, {"error": err.message}, headers)
        except (ValueError, KeyError) as err:  # malformed JSON, base64 or missing fields
            response = _json_response(400, {"error": f"Bad request: {err!r}"}, {"X-Error-Message": "Bad request"})
        except Exception as err:  # a server bug: answer 500 so that the test shows it, and keep serving
            response = _json_response(500, {"error": f"{type(err).__name__}: {err}"}, {"X-Error-Message": str(err)})
        if response is None:  # injected drop: answer nothing, the client sees "server disconnected"
            self.close_connection = True
        else:
            self._send(*response)
            record["status"] = response[0]
        with hub._lock:
            hub.requests.append(record)

    def _route(self, method: str, origin: str, body: bytes) -> Response:
        hub = self.hub
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        if m := _LFS_OBJECT.match(path):  # the "CDN": URLs are pre-signed there, so no auth check
            stored = hub.root / "lfs" / m.group(1)
            if method == "PUT":
                hub.lfs_put(m.group(1), body)
                return 200, b"", {"ETag": f'"{m.group(1)}"'}, None
            if method in ("GET", "HEAD") and stored.is_file():
                return _file_response(stored.read_bytes(), {"ETag": f'"{m.group(1)}"'}, self.headers.get("Range"))
            raise HubError(404, "Object not found")
        if origin == "cdn":
            raise HubError(404, "Not found")
        auth = self.headers.get("Authorization")
        with hub._lock:
            if path == "/api/repos/create" and method == "POST":
                hub.check_auth(auth, None)
                return _json_response(*hub.create_repo(json.loads(body or b"{}")))
            if path == "/api/validate-yaml" and method == "POST":
                return _json_response(200, {"errors": [], "warnings": []})
            if path == "/api/agent-harnesses" and method == "GET":
                # The client fetches this registry (agent detection for its user agent) and caches it a day.
                return _json_response(200, {"standardEnvVars": [], "harnesses": {}})
            if path == "/api/whoami-v2" and method == "GET":
                hub.check_auth(auth, None)
                return _json_response(200, {"type": "user", "name": hub.DEFAULT_NAMESPACE, "orgs": [],
                                            "auth": {"accessToken": {"role": "write"}}})
            if m := _API.match(path):
                plural, ns, name, action, rev, rest = m.groups()
                repo = hub._get_repo(PLURAL[plural], f"{unquote(ns)}/{unquote(name)}")
                hub.check_auth(auth, repo)
                rev = unquote(rev) if rev else "main"
                if action in (None, "revision") and method == "GET":
                    return _json_response(200, hub.repo_info(repo, rev, query))
                if action == "tree" and method == "GET":
                    return _json_response(200, hub.tree(repo, rev, unquote(rest or ""), query))
                if action == "paths-info" and method == "POST":
                    return _json_response(200, hub.paths_info(repo, rev, parse_qs(body.decode()).get("paths", [])))
                if action == "preupload" and method == "POST":
                    return _json_response(200, hub.preupload(repo, rev, json.loads(body)))
                if action == "commit" and method == "POST":
                    return _json_response(200, hub.commit(repo, rev, body, query))
            if (m := _LFS_API.match(path)) and method == "POST":
                plural, ns, name, action = m.groups()
                repo = hub._get_repo(PLURAL[plural or "models"], f"{unquote(ns)}/{unquote(name)}")
                hub.check_auth(auth, repo)
                payload = json.loads(body)
                answer = hub.lfs_batch(repo, payload) if action == "batch" else hub.lfs_verify(payload)
                return _json_response(200, answer, ctype="application/vnd.git-lfs+json")
            if (m := _RESOLVE.match(path)) and method in ("GET", "HEAD"):
                return self._resolve(m, auth)
        raise HubError(404, f"No route for {method} {path}")

    def _resolve(self, m: re.Match, auth: str | None) -> Response:
        """`/resolve/`: regular files inline; LFS files as a 302 to the CDN (the metadata rides on the 302)."""
        hub = self.hub
        plural, ns, name, rev, filename = m.groups()
        repo = hub._get_repo(PLURAL[plural or "models"], f"{unquote(ns)}/{unquote(name)}")
        hub.check_auth(auth, repo)
        sha = hub._resolve(repo, unquote(rev))
        entry = repo["commits"][sha]["files"].get(unquote(filename))
        if entry is None:  # X-Repo-Commit lets the client cache the file's absence (.no_exist)
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        # The client needs X-Repo-Commit and an ETag; for LFS it reads X-Linked-Etag/-Size off the 302.
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"]}"'}
        if entry["lfs"]:
            lfs_oid = entry["lfs"]["oid"]
            headers.update({"Location": f"{hub.cdn_url}/lfs-objects/{lfs_oid}", "X-Linked-Etag": f'"{lfs_oid}"',
                            "X-Linked-Size": str(entry["size"])})
            return 302, b"", headers, None
        data = (hub.root / "objects" / entry["oid"]).read_bytes()
        return _file_response(data, headers, self.headers.get("Range"))

    def _send(self, status: int, body: bytes, headers: dict, content_type: str | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))  # on HEAD too: the client reads it as the size
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def main(argv: list[str] | None = None) -> None:
    """Run the server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding the repos")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--lfs-threshold", type=int, default=1_000_000)
    parser.add_argument("--token", default=None, help="require this bearer token")
    args = parser.parse_args(argv)
    server = HubServer(args.root, lfs_threshold=args.lfs_threshold, token=args.token,
                       host=args.host, port=args.port).start()
    print(f"HF_ENDPOINT={server.url}", flush=True)
    print(f"export HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1  # LFS objects served from {server.cdn_url}",
          flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
