"""End-to-end tests of tests/hubserver.py with the real `huggingface_hub` client and timm.

Every client step runs in a fresh interpreter: `huggingface_hub` reads HF_ENDPOINT, HF_HUB_DISABLE_XET,
HF_HOME and HF_HUB_OFFLINE once, at import time, so they cannot be changed inside this process.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from zoo import forkserver

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hubserver import HubServer, git_blob_sha1

_RESULT = "@@RESULT@@"


def run_client(server: HubServer, code: str, *, hf_home: Path, env: dict | None = None, timeout: int = 240):
    """Run `code` in a fresh interpreter pointed at `server`; return the JSON value it assigns to `result`."""
    script = textwrap.dedent(code) + f"\nimport json as _j\nprint({_RESULT!r} + _j.dumps(result))\n"
    # Drop the caller's HF_* settings (token, cache, offline...) so only ours apply.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "HUGGING_FACE_"))}
    full_env = {**clean, "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(hf_home),
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **(env or {})}
    proc = forkserver.run([sys.executable, "-c", script], env=full_env, capture_output=True, text=True,
                          timeout=timeout, cwd=hf_home.parent)
    if proc.returncode != 0 or _RESULT not in proc.stdout:
        raise AssertionError(f"client failed (rc={proc.returncode})\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.rsplit(_RESULT, 1)[1])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_requests(server: HubServer, mark: int, pattern: str = "") -> list[dict]:
    return [r for r in server.requests[mark:] if pattern in r["path"]]


def get_json(base_url: str, path: str):
    with urllib.request.urlopen(base_url + path) as resp:
        return json.load(resp)


# Client-side snippet turning an exception into JSON-able facts.
CATCH = """
def describe(e):
    status = getattr(getattr(e, "response", None), "status_code", None)
    return {"type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__], "status": status}

def catch(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as e:
        return describe(e)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub"), lfs_threshold=1_000_000) as srv:
        yield srv


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("upload")
    (d / "config.json").write_text(json.dumps({"architecture": "toy", "num_classes": 3}))
    (d / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: timm\n---\n# toy model\n")
    (d / "model.safetensors").write_bytes(random.Random(0).randbytes(2_000_000))  # 2 MB: above the LFS threshold
    (d / "sub" / "dir").mkdir(parents=True)
    (d / "sub" / "dir" / "notes.txt").write_text("nested file\n")
    return d


def local_files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256(p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


UPLOAD = """
from huggingface_hub import HfApi
api = HfApi(token="hf_writer")
api.create_repo("{repo}", exist_ok=True)
info = api.upload_folder(repo_id="{repo}", folder_path=r"{folder}")
result = info.oid
"""


@pytest.fixture(scope="module")
def uploaded(server, upload_dir, tmp_path_factory) -> dict:
    """`user/weights`, holding `upload_dir`, uploaded once by the real client."""
    mark = len(server.requests)
    oid = run_client(server, UPLOAD.format(repo="user/weights", folder=upload_dir),
                     hf_home=tmp_path_factory.mktemp("home") / "hf")
    return {"repo": "user/weights", "commit": oid, "requests": server.requests[mark:]}


def test_create_repo_and_exist_ok(server, tmp_path):
    result = run_client(server, CATCH + """
from huggingface_hub import HfApi
api = HfApi(token="hf_writer")
first = api.create_repo("user/created")
again = api.create_repo("user/created", exist_ok=True)   # the server answers 409, the client swallows it
result = {"first": first, "again": again, "conflict": catch(api.create_repo, "user/created")}
""", hf_home=tmp_path / "hf")
    assert result["first"] == result["again"] == f"{server.url}/user/created"
    assert result["conflict"]["status"] == 409 and result["conflict"]["type"] == "HfHubHTTPError"
    assert len(server.commits("user/created")) == 1  # the initial commit with .gitattributes
    creates = [r for r in server.requests if r["path"] == "/api/repos/create"]
    assert [r["status"] for r in creates[-3:]] == [200, 409, 409]
    assert all(r["authorization"] == "Bearer hf_writer" for r in creates[-3:])


def test_upload_folder_goes_through_lfs(server, uploaded, upload_dir):
    big = sha256((upload_dir / "model.safetensors").read_bytes())
    puts = [r for r in uploaded["requests"] if r["method"] == "PUT"]
    # The big file went to the "CDN" origin by PUT, without the Hub token (it is a pre-signed URL there).
    assert [(r["origin"], r["path"], r["authorization"]) for r in puts] == [("cdn", f"/lfs-objects/{big}", None)]
    assert server.commits("user/weights")[0] == uploaded["commit"]
    assert len(server.commits("user/weights")) == 2

    tree = {e["path"]: e for e in get_json(server.url, "/api/models/user/weights/tree/main?recursive=true")}
    assert tree["model.safetensors"]["lfs"]["oid"] == big
    assert tree["config.json"]["oid"] == git_blob_sha1((upload_dir / "config.json").read_bytes())
    assert "lfs" not in tree["config.json"]
    assert tree["sub"]["type"] == tree["sub/dir"]["type"] == "directory"
    top = {e["path"] for e in get_json(server.url, "/api/models/user/weights/tree/main")}
    assert top == {".gitattributes", "README.md", "config.json", "model.safetensors", "sub"}


def test_identical_reupload_makes_no_commit(server, uploaded, upload_dir, tmp_path):
    before, mark = server.commits("user/weights"), len(server.requests)
    oid = run_client(server, UPLOAD.format(repo="user/weights", folder=upload_dir), hf_home=tmp_path / "hf")
    assert oid == uploaded["commit"]
    assert server.commits("user/weights") == before
    methods = {(r["method"], r["path"].split("?")[0]) for r in new_requests(server, mark)}
    assert ("POST", "/api/models/user/weights/commit/main") not in methods  # preupload oids matched
    assert not any(m == "PUT" for m, _ in methods)  # LFS batch: object already stored, no upload action


def test_downloads_match_uploaded_bytes(server, uploaded, upload_dir, tmp_path):
    mark = len(server.requests)
    result = run_client(server, """
import hashlib, os
from huggingface_hub import hf_hub_download, snapshot_download
def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()
files = ["config.json", "README.md", "model.safetensors", "sub/dir/notes.txt"]
single = {f: digest(hf_hub_download("user/weights", f, token="hf_reader")) for f in files}
snap = snapshot_download("user/weights", cache_dir=os.path.abspath("snapcache"))
snapshot = {os.path.relpath(os.path.join(d, f), snap).replace(os.sep, "/"): digest(os.path.join(d, f))
            for d, _, fs in os.walk(snap) for f in fs}
result = {"single": single, "snapshot": snapshot, "snap_dir": snap}
""", hf_home=tmp_path / "hf")
    expected = local_files(upload_dir)
    assert result["single"] == expected
    assert {k: v for k, v in result["snapshot"].items() if k != ".gitattributes"} == expected
    assert result["snap_dir"].endswith(uploaded["commit"])
    # The token goes to the Hub origin but is stripped on the cross-origin LFS download.
    big = new_requests(server, mark, "model.safetensors")
    assert big[0]["method"] == "HEAD" and big[0]["status"] == 302 and big[0]["authorization"] == "Bearer hf_reader"
    cdn = [r for r in new_requests(server, mark, "/lfs-objects/") if r["method"] == "GET"]
    assert cdn and all(r["origin"] == "cdn" and r["authorization"] is None for r in cdn)


def test_revisions_and_history(server, tmp_path):
    result = run_client(server, CATCH + """
from huggingface_hub import CommitOperationCopy, CommitOperationDelete, HfApi, hf_hub_download
api = HfApi()
api.create_repo("user/history")
v1 = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id="user/history").oid
v2 = api.upload_file(path_or_fileobj=b"v2", path_in_repo="a.txt", repo_id="user/history").oid
result = {
    "v1": v1, "v2": v2,
    "at_v1": open(hf_hub_download("user/history", "a.txt", revision=v1)).read(),
    "at_main": open(hf_hub_download("user/history", "a.txt")).read(),
    "info_v1": api.model_info("user/history", revision=v1).sha,
    "missing_rev": catch(hf_hub_download, "user/history", "a.txt", revision="nope"),
    "missing_rev_info": catch(api.model_info, "user/history", revision="nope"),
}
# A copy (served through paths-info + resolve) and a delete in one commit.
ops = [CommitOperationCopy("a.txt", "b.txt"), CommitOperationDelete("a.txt")]
result["v3"] = api.create_commit("user/history", operations=ops, commit_message="move").oid
result["files"] = api.list_repo_files("user/history")
result["paths"] = [p.path for p in api.get_paths_info("user/history", ["b.txt", "missing.txt"])]
""", hf_home=tmp_path / "hf")
    assert (result["at_v1"], result["at_main"]) == ("v1", "v2")
    assert result["info_v1"] == result["v1"]
    assert server.commits("user/history")[:3] == [result["v3"], result["v2"], result["v1"]]
    assert result["files"] == [".gitattributes", "b.txt"] and result["paths"] == ["b.txt"]
    assert result["missing_rev"]["type"] == result["missing_rev_info"]["type"] == "RevisionNotFoundError"


def test_missing_entries_map_to_client_errors(server, uploaded, tmp_path):
    result = run_client(server, CATCH + """
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
result = {
    "file": catch(hf_hub_download, "user/weights", "missing.bin"),
    "repo": catch(hf_hub_download, "user/no-such-repo", "config.json"),
    "repo_info": catch(api.model_info, "user/no-such-repo"),
    "exists": [api.file_exists("user/weights", "config.json"), api.file_exists("user/weights", "missing.bin")],
}
""", hf_home=tmp_path / "hf")
    assert result["file"]["type"] == "RemoteEntryNotFoundError" and "EntryNotFoundError" in result["file"]["mro"]
    assert result["repo"]["type"] == result["repo_info"]["type"] == "RepositoryNotFoundError"
    assert result["exists"] == [True, False]


DOWNLOAD_CONFIG = CATCH + """
from huggingface_hub import hf_hub_download
try:
    result = open(hf_hub_download("user/weights", "config.json")).read()
except Exception as e:
    result = describe(e)
"""


def test_500_on_metadata_head_is_retried(server, uploaded, upload_dir, tmp_path):
    # huggingface_hub 2.4: the first HEAD is sent without retries (to fall back on the cache fast);
    # with nothing cached and a retryable status (408/429/5xx) it asks again, then with http_backoff
    # (up to 5 retries, sleeping 1, 2, 4, 8, 8 s). One 500 therefore costs no sleep at all.
    server.inject(r"/resolve/main/config\.json$", status=500, method="HEAD")
    mark = len(server.requests)
    assert run_client(server, DOWNLOAD_CONFIG, hf_home=tmp_path / "hf") == (upload_dir / "config.json").read_text()
    heads = [r["status"] for r in new_requests(server, mark, "config.json") if r["method"] == "HEAD"]
    assert heads == [500, 200]


def test_500_on_file_get_is_not_retried(server, uploaded, tmp_path):
    # huggingface_hub 2.4: the GET of the content retries only 408/429 statuses (and resumes on
    # connection errors, see below); a 500 surfaces at once as HfHubHTTPError.
    server.inject(r"/resolve/main/config\.json$", status=500, method="GET")
    error = run_client(server, DOWNLOAD_CONFIG, hf_home=tmp_path / "hf")
    assert error["type"] == "HfHubHTTPError" and error["status"] == 500


def test_dropped_connection_during_download_is_resumed(server, uploaded, upload_dir, tmp_path):
    # A connection closed during the GET (RemoteProtocolError) is retried by http_get after 1 s.
    server.inject(r"^/lfs-objects/", status=None, method="GET")
    mark = len(server.requests)
    digest = run_client(server, """
import hashlib
from huggingface_hub import hf_hub_download
result = hashlib.sha256(open(hf_hub_download("user/weights", "model.safetensors"), "rb").read()).hexdigest()
""", hf_home=tmp_path / "hf")
    assert digest == sha256((upload_dir / "model.safetensors").read_bytes())
    assert [r["status"] for r in new_requests(server, mark, "/lfs-objects/")] == [None, 200]


def test_dropped_connection_on_metadata_head_is_not_handled(server, uploaded, tmp_path):
    # huggingface_hub 2.4 quirk: a connection dropped during the metadata HEAD is neither retried nor
    # mapped to a Hub error: httpx2.RemoteProtocolError escapes hf_hub_download.
    server.inject(r"/resolve/main/config\.json$", status=None, method="HEAD")
    error = run_client(server, DOWNLOAD_CONFIG, hf_home=tmp_path / "hf")
    assert error["type"] == "RemoteProtocolError"


@pytest.fixture(scope="module")
def timm_repo(server, tmp_path_factory) -> dict:
    """A test_resnet saved with timm.models.save_for_hf and uploaded, plus the same via push_to_hf_hub."""
    folder = tmp_path_factory.mktemp("timm")
    return run_client(server, f"""
import torch, timm
from timm.models import save_for_hf, push_to_hf_hub
from huggingface_hub import HfApi
torch.manual_seed(0)
model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
save_for_hf(model, r"{folder}", safe_serialization=True)
api = HfApi()
api.create_repo("user/timm-resnet")
api.upload_folder(repo_id="user/timm-resnet", folder_path=r"{folder}")
push_to_hf_hub(model, "user/timm-pushed")
x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    result = model(x).tolist()
""", hf_home=tmp_path_factory.mktemp("home") / "hf")


def load_timm(*repos: str) -> str:
    """Client code loading each repo with timm's `hf-hub:` prefix; result: repo -> logits."""
    return f"repos = {list(repos)!r}\n" + """
import torch, timm
x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
result = {}
for repo in repos:
    model = timm.create_model("hf-hub:" + repo, pretrained=True).eval()
    with torch.no_grad():
        result[repo] = model(x).tolist()
"""


@pytest.fixture(scope="module")
def timm_home(server, timm_repo, tmp_path_factory) -> tuple[Path, dict]:
    """A fresh HF_HOME filled by loading both timm repos through `hf-hub:`."""
    home = tmp_path_factory.mktemp("timm-home") / "hf"
    logits = run_client(server, load_timm("user/timm-resnet", "user/timm-pushed"), hf_home=home)
    return home, logits


def test_timm_repos_have_expected_files(server, timm_repo):
    saved = {e["path"]: e for e in get_json(server.url, "/api/models/user/timm-resnet/tree/main")}
    assert set(saved) == {".gitattributes", "config.json", "model.safetensors"}
    assert "lfs" in saved["model.safetensors"]  # 1.5 MB, and an LFS suffix anyway
    pushed = {e["path"] for e in get_json(server.url, "/api/models/user/timm-pushed/tree/main")}
    assert pushed == {".gitattributes", "README.md", "config.json", "model.safetensors", "pytorch_model.bin"}


def test_timm_hf_hub_loads_pushed_model(timm_repo, timm_home):
    _, logits = timm_home
    for repo in ("user/timm-resnet", "user/timm-pushed"):
        assert logits[repo] == [pytest.approx(row, abs=1e-6) for row in timm_repo]


def test_offline_mode_uses_filled_cache(server, timm_repo, timm_home):
    home, _ = timm_home
    mark = len(server.requests)
    result = run_client(server, CATCH + load_timm("user/timm-resnet") + """
import tempfile
from huggingface_hub import hf_hub_download
result["empty_cache"] = catch(hf_hub_download, "user/timm-resnet", "config.json", cache_dir=tempfile.mkdtemp())
""", hf_home=home, env={"HF_HUB_OFFLINE": "1"})
    assert result["user/timm-resnet"] == [pytest.approx(row, abs=1e-6) for row in timm_repo]
    assert "LocalEntryNotFoundError" in result["empty_cache"]["mro"]
    assert server.requests[mark:] == []  # offline means not a single request


def test_token_required(tmp_path):
    with HubServer(tmp_path / "hub", token="hf_secret") as srv:
        result = run_client(srv, CATCH + """
from huggingface_hub import HfApi, hf_hub_download
api = HfApi(token="hf_secret")
api.create_repo("user/private", private=True)
api.upload_file(path_or_fileobj=b"x" * 1_500_000, path_in_repo="w.bin", repo_id="user/private")
result = {
    "anonymous": catch(HfApi(token=False).model_info, "user/private"),
    "wrong": catch(HfApi(token="hf_wrong").model_info, "user/private"),
    "size": len(open(hf_hub_download("user/private", "w.bin", token="hf_secret"), "rb").read()),
    "private": api.model_info("user/private").private,
}
""", hf_home=tmp_path / "hf")
        anonymous = [r for r in srv.requests if r["authorization"] is None and r["origin"] == "hub"]
    assert result["anonymous"]["type"] == "RepositoryNotFoundError" and result["anonymous"]["status"] == 401
    assert result["wrong"]["type"] == "HfHubHTTPError" and result["wrong"]["status"] == 401
    assert result["size"] == 1_500_000 and result["private"] is True
    # Only the deliberately anonymous call (and the client's agent-registry fetch, when it makes one) lacked the token.
    assert "/api/models/user/private" in {r["path"] for r in anonymous}
    assert {r["path"] for r in anonymous} <= {"/api/agent-harnesses", "/api/models/user/private"}


def test_resolve_headers_and_ranges(server, uploaded, upload_dir):
    host = server.url.removeprefix("http://")
    big = (upload_dir / "model.safetensors").read_bytes()
    conn = http.client.HTTPConnection(host)
    conn.request("HEAD", "/user/weights/resolve/main/model.safetensors")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 302
    assert resp.headers["X-Linked-Etag"] == f'"{sha256(big)}"' and resp.headers["X-Linked-Size"] == str(len(big))
    assert resp.headers["X-Repo-Commit"] == uploaded["commit"]
    assert resp.headers["Location"] == f"{server.cdn_url}/lfs-objects/{sha256(big)}"
    conn.request("GET", "/user/weights/resolve/main/config.json", headers={"Range": "bytes=2-9"})
    resp = conn.getresponse()
    assert resp.status == 206 and resp.read() == (upload_dir / "config.json").read_bytes()[2:10]
    conn.request("GET", "/user/weights/resolve/main/nope.txt")
    resp = conn.getresponse()
    resp.read()
    assert (resp.status, resp.headers["X-Error-Code"]) == (404, "EntryNotFound")
    conn.close()
    req = urllib.request.Request(f"{server.cdn_url}/lfs-objects/{sha256(big)}", headers={"Range": "bytes=1999990-"})
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 206 and resp.read() == big[1999990:]


def test_state_persists_and_main_runs(tmp_path):
    with HubServer(tmp_path) as srv:
        req = urllib.request.Request(f"{srv.url}/api/repos/create", data=b'{"name": "kept", "organization": "org"}',
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req).close()
        commits = srv.commits("org/kept")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("hubserver.py")), "--root", str(tmp_path),
                             "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip().removeprefix("HF_ENDPOINT=")
        assert get_json(url, "/api/models/org/kept")["sha"] == commits[0]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/api/models/org/missing")
        assert err.value.code == 404 and err.value.headers["X-Error-Code"] == "RepoNotFound"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()

