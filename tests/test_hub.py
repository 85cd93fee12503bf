"""Publishing runs to the Hub and loading them back, against tests/hubserver.py.

huggingface_hub reads HF_ENDPOINT, HF_HUB_DISABLE_XET, HF_HOME and HF_HUB_OFFLINE once, when it is
imported, and other tests import it first in this process: so every step that talks to the Hub runs
in a fresh interpreter (`python -m zoo ...` or `python -c ...`) with its own environment. Runs are
made in-process (training never talks to the Hub).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import yaml
from conftest import _reset, make_image_folder

import zoo
from zoo import forkserver

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hubserver import HubServer

TOKEN = "hf_zooPLANTEDtoken123secretXYZ"
OTHER = "hf_zooNOTgivenTOKEN987otherABC"  # shaped like a Hub token, but the client was never given it
FILE_TOKEN = "zooFILE/tok+en=42secretQ"  # in HF_HOME/token; URL-encoding changes it
SECRET = "zoo-SECRET-file-content-4711"  # what a link in a run directory points at
RUN = dict(backbone="test_resnet", pretrained=False, img_size=32, batch_size=16, epochs=1, aug="none")
PUSHED = {".gitattributes", "README.md", "config.json", "model.safetensors", "run_config.yaml", "metrics.jsonl",
          "loss.png", "accuracy.png", "confusion.png"}
OUTPUTS: list[str] = []  # every subprocess's stdout and stderr, checked for the token at the end


def hub_env(server: HubServer, home: Path, *, token: str | None = TOKEN, **extra) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "HUGGING_FACE_"))}
    env = {**clean, "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "ZOO_LOAD_PLUGINS": "", **extra}
    if token:
        env["HF_TOKEN"] = token
    return env


def zoo_cli(server: HubServer, home: Path, *args, token: str | None = TOKEN, timeout: int = 300, **extra):
    proc = forkserver.run([sys.executable, "-m", "zoo", *map(str, args)], env=hub_env(server, home, token=token, **extra),
                          capture_output=True, text=True, timeout=timeout, cwd=home.parent)
    OUTPUTS.extend([proc.stdout, proc.stderr])
    return proc


def client(server: HubServer, home: Path, code: str, *, token: str | None = TOKEN, stderr: bool = False, **extra):
    """Run Python `code` that assigns `result`; return it (JSON), with the stderr when asked."""
    script = textwrap.dedent(code) + "\nimport json as _j\nprint('@@' + _j.dumps(result))\n"
    proc = forkserver.run([sys.executable, "-c", script], env=hub_env(server, home, token=token, **extra),
                          capture_output=True, text=True, timeout=300, cwd=home.parent)
    OUTPUTS.extend([proc.stdout, proc.stderr])
    assert proc.returncode == 0 and "@@" in proc.stdout, proc.stderr
    result = json.loads(proc.stdout.rsplit("@@", 1)[1])
    return (result, proc.stderr) if stderr else result


def pieces(token: str, text: str, n: int = 6) -> list[str]:
    """The substrings of `token` of length `n` found in `text` (a longer substring contains one of them)."""
    return [token[i:i + n] for i in range(len(token) - n + 1) if token[i:i + n] in text]


def stored(server: HubServer, content: str) -> list[Path]:
    """The files of the server's storage (objects, LFS objects, repo records) that hold `content`."""
    return [p for p in server.root.rglob("*") if p.is_file() and content.encode() in p.read_bytes()]


def ok(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its content hash and modification time."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def tree(server: HubServer, repo: str) -> set[str]:
    with urllib.request.urlopen(f"{server.url}/api/models/{repo}/tree/main?recursive=true") as resp:
        return {e["path"] for e in json.load(resp) if e["type"] == "file"}


def remote_text(server: HubServer, repo: str, path: str) -> str:
    with urllib.request.urlopen(f"{server.url}/{repo}/resolve/main/{path}") as resp:
        return resp.read().decode()


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def commit_posts(server: HubServer, mark: int, repo: str) -> list:
    return [r["status"] for r in server.requests[mark:] if r["method"] == "POST" and r["path"].startswith(f"/api/models/{repo}/commit/")]


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A small LFS threshold: every binary or big file goes through the git-lfs batch API.
    with HubServer(tmp_path_factory.mktemp("hub"), lfs_threshold=10_000) as srv:
        yield srv


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    _reset()
    out = tmp_path_factory.mktemp("runs") / "linear"
    zoo.finetune(data="synthetic", out=out, **RUN)
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    """Fresh HF_HOME folders, one per call."""
    return lambda: tmp_path_factory.mktemp("home") / "hf"


@pytest.fixture(scope="module")
def pushed(server, run_dir, homes) -> dict:
    before, mark = snapshot(run_dir), len(server.requests)
    result = ok(zoo_cli(server, homes(), "push", run_dir, "user/linear", "--json"))
    return {"result": result, "requests": server.requests[mark:], "before": before}


# -- push -------------------------------------------------------------------------------------
def test_push_is_one_commit_with_weights_through_lfs(server, run_dir, pushed):
    result = pushed["result"]
    assert result["repo_url"] == f"{server.url}/user/linear"
    assert server.commits("user/linear")[0] == result["commit"] and len(server.commits("user/linear")) == 2
    assert tree(server, "user/linear") == PUSHED  # no checkpoints without --with-checkpoints
    assert set(result["files"]) == PUSHED - {".gitattributes"}
    paths = [(r["method"], r["path"], r["origin"]) for r in pushed["requests"]]
    assert ("POST", "/user/linear.git/info/lfs/objects/batch", "hub") in paths
    weights = hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()
    assert ("PUT", f"/lfs-objects/{weights}", "cdn") in paths
    assert snapshot(run_dir) == pushed["before"]  # the run directory was only read


def test_model_card_on_the_hub(server, run_dir, pushed):
    from zoo import cards

    card = remote_text(server, "user/linear", "README.md")
    meta = front_matter(card)
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-classification"
    assert meta["license"] == "apache-2.0"
    top1 = json.loads((run_dir / "config.json").read_text())["zoo"]["metrics"]["top1"]
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert {"name": "top-1 accuracy", "type": "accuracy", "value": round(top1, 4)} in metrics
    assert meta["model-index"][0]["name"] == "user/linear" and "base_model" not in meta  # trained from timm:, not the Hub
    assert 'timm.create_model("hf-hub:user/linear", pretrained=True)' in card
    assert "zoo predict hf-hub:user/linear image.jpg" in card and str(run_dir) not in card
    assert cards.is_generated(card) and not cards.is_generated(card.replace("top1", "top-1"))


def test_unchanged_run_pushed_again_makes_no_commit(server, run_dir, pushed, homes):
    before, mark = server.commits("user/linear"), len(server.requests)
    proc = zoo_cli(server, homes(), "push", run_dir, "user/linear")
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout and "nothing changed" in proc.stderr
    assert server.commits("user/linear") == before
    assert commit_posts(server, mark, "user/linear") == []
    assert not any(r["method"] == "PUT" for r in server.requests[mark:])


def test_dry_run_writes_the_folder_and_uploads_nothing(server, run_dir, tmp_path, homes):
    mark = len(server.requests)
    result = ok(zoo_cli(server, homes(), "push", run_dir, "user/dry", "--with-checkpoints", "--dry-run", tmp_path / "up", "--json"))
    files = {p.relative_to(tmp_path / "up").as_posix() for p in (tmp_path / "up").rglob("*") if p.is_file()}
    assert files == set(result["files"]) == PUSHED - {".gitattributes"} | {"checkpoints/best.safetensors", "checkpoints/last.pt"}
    assert (tmp_path / "up" / "model.safetensors").read_bytes() == (run_dir / "model.safetensors").read_bytes()
    assert "hf-hub:user/dry" in (tmp_path / "up" / "README.md").read_text()
    assert server.requests[mark:] == []  # not a single request
    again = zoo_cli(server, homes(), "push", run_dir, "user/dry", "--dry-run", tmp_path / "up")
    assert again.returncode == 2 and "not an empty folder" in again.stderr


def test_transient_500_on_commit_is_retried(server, run_dir, homes):
    server.inject(r"^/api/models/user/retry/commit/main", status=500, method="POST")
    mark = len(server.requests)
    result = ok(zoo_cli(server, homes(), "push", run_dir, "user/retry", "--json"))
    assert commit_posts(server, mark, "user/retry") == [500, 200]
    assert server.commits("user/retry")[0] == result["commit"] and len(server.commits("user/retry")) == 2
    assert tree(server, "user/retry") == PUSHED


def test_a_retry_after_from_the_server_is_waited_for(server, run_dir, homes):
    """503 with Retry-After: 2 on the commit: zoo waits 2 s (its own first wait is 1 s), then the push goes through."""
    server.inject(r"^/api/models/user/later/commit/main", status=503, method="POST", retry_after=2)
    mark = len(server.requests)
    ok(zoo_cli(server, homes(), "push", run_dir, "user/later", "--json"))
    posts = [r for r in server.requests[mark:] if r["method"] == "POST" and r["path"].startswith("/api/models/user/later/commit/")]
    assert [r["status"] for r in posts] == [503, 200]
    assert posts[1]["at"] - posts[0]["at"] >= 2


def test_wrong_token_is_one_line_that_says_log_in(run_dir, tmp_path):
    before = snapshot(run_dir)
    with HubServer(tmp_path / "hub", token="hf_theRIGHTtoken456") as srv:
        proc = zoo_cli(srv, tmp_path / "hf", "push", run_dir, "user/denied", "--private", token="hf_zooWRONGtoken789")
        assert any(r["authorization"] == "Bearer hf_zooWRONGtoken789" for r in srv.requests)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: push to user/denied failed") and "Traceback" not in proc.stderr
    assert "log in: hf auth login or set HF_TOKEN" in lines[0]
    assert f"retry with: zoo push {run_dir} user/denied --private" in lines[0]
    assert "hf_zooWRONGtoken789" not in proc.stderr + proc.stdout
    assert snapshot(run_dir) == before


def test_hand_edited_card_on_the_hub_is_kept(server, run_dir, homes):
    own = "---\nlicense: mit\n---\n# My own words about this model\n"
    client(server, homes(), f"""
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("user/edited")
api.upload_file(path_or_fileobj={own.encode()!r}, path_in_repo="README.md", repo_id="user/edited")
result = None
""")
    proc = zoo_cli(server, homes(), "push", run_dir, "user/edited")
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in proc.stderr.splitlines() if "README.md" in ln]
    assert len(notes) == 1 and "edited by hand" in notes[0] and "--overwrite-card" in notes[0]
    assert remote_text(server, "user/edited", "README.md") == own
    assert tree(server, "user/edited") == PUSHED  # everything else went up
    again = ok(zoo_cli(server, homes(), "push", run_dir, "user/edited", "--json"))
    assert again["commit"] is None  # still kept, nothing else changed
    replaced = ok(zoo_cli(server, homes(), "push", run_dir, "user/edited", "--overwrite-card", "--json"))
    assert replaced["commit"] == server.commits("user/edited")[0]
    assert "# user/edited" in remote_text(server, "user/edited", "README.md")


# -- loading back -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def filled_home(homes):
    return homes()


@pytest.mark.slow
def test_predict_from_the_hub_matches_the_local_run(server, run_dir, pushed, image, filled_home):
    remote = ok(zoo_cli(server, filled_home, "predict", "hf-hub:user/linear", image, "--json"))
    local = zoo.predict(run_dir, [image])
    assert remote[0]["predictions"] == local[0]["predictions"]


@pytest.mark.slow
def test_plain_timm_loads_the_pushed_model(server, run_dir, pushed, homes):
    import torch

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    logits = client(server, homes(), """
import torch, timm
x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
model = timm.create_model("hf-hub:user/linear", pretrained=True).eval()
with torch.no_grad():
    result = model(x).tolist()
""")
    model, _, _ = zoo.load(run_dir)
    with torch.inference_mode():
        expected = model(x)
    assert torch.equal(torch.tensor(logits), expected)


@pytest.mark.slow
def test_offline_predict_uses_the_cache_and_says_what_to_do_without_it(server, run_dir, pushed, image, filled_home, homes):
    if not (filled_home / "hub").is_dir():
        ok(zoo_cli(server, filled_home, "predict", "hf-hub:user/linear", image, "--json"))
    mark = len(server.requests)
    offline = ok(zoo_cli(server, filled_home, "predict", "hf-hub:user/linear", image, "--json", HF_HUB_OFFLINE="1"))
    assert offline == zoo.predict(run_dir, [image])
    assert server.requests[mark:] == []
    # The Hub unreachable (zoo's probe finds the port closed): the cache answers just the same, at once.
    start = time.perf_counter()
    assert ok(zoo_cli(server, filled_home, "predict", "hf-hub:user/linear", image, "--json", HF_ENDPOINT="http://127.0.0.1:9")) == offline
    unreachable_s = time.perf_counter() - start
    start = time.perf_counter()
    ok(zoo_cli(server, filled_home, "predict", "hf-hub:user/linear", image, "--json", HF_HUB_OFFLINE="1"))
    assert unreachable_s < time.perf_counter() - start + 5  # no retries: within seconds of HF_HUB_OFFLINE=1
    proc = zoo_cli(server, homes(), "predict", "hf-hub:user/linear", image, HF_HUB_OFFLINE="1")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    assert lines[0].startswith("Error: hf-hub:user/linear: offline mode") and "HF_HUB_OFFLINE" in lines[0]


@pytest.mark.slow
def test_zoo_list_marks_hub_and_timm_weights_in_the_cache_as_offline(server, run_dir, pushed, image, homes, tmp_path):
    home, registry = homes(), tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"backbones": {"pushed": {"source": "hf-hub:user/linear"},
                                                      "timm-tagged": {"source": "timm:test_resnet.r160_in1k"}}}))

    def offline() -> dict:
        rows = ok(zoo_cli(server, home, "list", "backbones", "--json", ZOO_REGISTRY=str(registry)))
        return {r["name"]: r["offline"] for r in rows if r["name"] in ("pushed", "timm-tagged")}

    assert offline() == {"pushed": False, "timm-tagged": False}
    ok(zoo_cli(server, home, "predict", "hf-hub:user/linear", image, "--json"))  # fills the cache
    assert offline() == {"pushed": True, "timm-tagged": False}
    # timm fetches a tagged name's weights from the Hub repo timm/NAME, into the same cache.
    ok(zoo_cli(server, home, "push", run_dir, "timm/test_resnet.r160_in1k", "--json"))
    client(server, home, """
        import timm
        timm.create_model("test_resnet.r160_in1k", pretrained=True, num_classes=2)
        result = True
    """)
    assert offline() == {"pushed": True, "timm-tagged": True}


@pytest.mark.slow
def test_plugin_head_model_names_the_missing_plugin(server, tmp_path_factory, image, homes):
    mlp = tmp_path_factory.mktemp("runs") / "mlp"
    _reset()
    zoo.finetune(data="synthetic", out=mlp, head="mlp", head_opts={"hidden": 16}, **RUN)
    ok(zoo_cli(server, homes(), "push", mlp, "user/mlp", "--json"))
    card = remote_text(server, "user/mlp", "README.md")
    assert "zoo head `mlp`" in card and "timm.create_model" not in card
    assert ok(zoo_cli(server, homes(), "predict", "hf-hub:user/mlp", image, "--json")) == zoo.predict(mlp, [image])
    # The model now needs a head that no installed plugin provides.
    client(server, homes(), """
import json
from huggingface_hub import HfApi, hf_hub_download
config = json.load(open(hf_hub_download("user/mlp", "config.json")))
config["zoo"]["head"]["name"] = "fancy-head"
config["zoo"]["plugins"].append({"name": "zoo-fancy", "version": "1.0", "builtin": False, "provides": ["fancy-head"]})
HfApi().upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json", repo_id="user/mlp")
result = None
""")
    proc = zoo_cli(server, homes(), "predict", "hf-hub:user/mlp", image)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    assert "uses the head 'fancy-head'" in lines[0] and "zoo plugins install zoo-fancy" in lines[0]


def test_install_from_a_hub_model_refuses_a_record_that_is_not_name_eq_version(server, homes, tmp_path):
    """Only config.json is fetched for --from-model hf-hub:..., so a Hub repo alone can carry such a record."""
    record = {"name": "zoo-cosine @ https://127.0.0.1:9/evil.tar.gz", "version": "0.1.0", "provides": ["cosine"]}
    client(server, homes(), f"""
import json
from huggingface_hub import HfApi
HfApi().create_repo("user/evil-record", exist_ok=True)
config = {{"architecture": "test_resnet", "zoo": {{"plugins": [{record!r}]}}}}
HfApi().upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json", repo_id="user/evil-record")
result = None
""")
    proc = zoo_cli(server, homes(), "plugins", "install", "--from-model", "hf-hub:user/evil-record", "-y",
                   PIP_LOG=str(tmp_path / "pip.log"), PIP_TARGET=str(tmp_path / "target"), PIP_NO_INDEX="1")
    assert proc.returncode == 1 and proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("Error: hf-hub:user/evil-record records a plugin zoo will not install: "
                                  "name 'zoo-cosine @ https://127.0.0.1:9/evil.tar.gz'"), proc.stderr
    assert not (tmp_path / "pip.log").exists()  # pip never ran


@pytest.mark.slow
def test_a_repo_with_only_pickle_weights_is_refused_and_its_pickle_never_fetched(server, run_dir, tmp_path, image, homes):
    """timm's Hub loader falls back to pytorch_model.bin (a pickle); zoo never asks for it."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "PWNED",))

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_bytes((run_dir / "config.json").read_bytes())
    (repo / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    client(server, homes(), f"""
from huggingface_hub import HfApi
HfApi().create_repo("user/pickled")
HfApi().upload_folder(folder_path={str(repo)!r}, repo_id="user/pickled")
result = None
""")
    mark = len(server.requests)
    data = make_image_folder(tmp_path / "photos", per_class=4, size=(32, 32))
    for args in (("predict", "hf-hub:user/pickled", image),
                 ("finetune", "hf-hub:user/pickled", "--data", data, "--img-size", "32", "--epochs", "1", "--out", tmp_path / "out"),
                 ("compare", "hf-hub:user/pickled", "--data", data, "--img-size", "32", "--val-split", "0.25")):
        proc = zoo_cli(server, homes(), *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("Error: ") and lines[0].endswith("has no model.safetensors (zoo reads weights only as safetensors)")
    assert [r["path"] for r in server.requests[mark:] if r["path"].endswith(".bin")] == []
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.slow
def test_finetune_from_a_pushed_model_and_push_at_each_best(server, run_dir, pushed, tmp_path, homes):
    from safetensors.torch import load_file

    data = make_image_folder(tmp_path / "photos", per_class=10, size=(32, 32))
    out = tmp_path / "continued"
    proc = zoo_cli(server, homes(), "finetune", "hf-hub:user/linear", "--data", data, "--freeze", "head-only", "--epochs", "1",
                   "--img-size", "32", "--batch-size", "8", "--val-split", "0.2", "--aug", "none", "--out", out,
                   "--push-to-hub", "user/continued", "--hub-strategy", "best", "--json")
    summary = ok(proc)
    # Three commits: the new repo, the best checkpoint after epoch 1, the finished run (card, plots).
    commits = server.commits("user/continued")
    assert len(commits) == 3 and summary["hub"]["commit"] == commits[0]
    assert tree(server, "user/continued") == PUSHED
    # Continued from the pushed weights: the backbone is bit-identical (head-only), the head has 2 classes.
    base, new = load_file(run_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert new["fc.weight"].shape[0] == 2 and base["fc.weight"].shape[0] == 4
    assert all(np.array_equal(base[k].numpy(), new[k].numpy()) for k in base if not k.startswith("fc."))
    meta = front_matter(remote_text(server, "user/continued", "README.md"))
    assert meta["base_model"] == "user/linear" and meta["library_name"] == "timm"
    config = json.loads(remote_text(server, "user/continued", "config.json"))
    assert config["zoo"]["backbone"]["source"] == "hf-hub:user/linear" and config["label_names"] == ["cat", "dog"]


def test_push_usage_errors(server, run_dir, tmp_path, homes):
    bad = zoo_cli(server, homes(), "push", run_dir, "no-namespace")
    assert bad.returncode == 2 and "ORG/NAME" in bad.stderr
    (tmp_path / "empty").mkdir()
    missing = zoo_cli(server, homes(), "push", tmp_path / "empty", "user/x")
    assert missing.returncode == 2 and "has no config.json" in missing.stderr


def test_locally_edited_card_is_published_as_written(run_dir, tmp_path):
    import shutil

    from zoo import cards

    local = tmp_path / "run"
    shutil.copytree(run_dir, local)
    assert cards.is_generated((local / "README.md").read_text())
    (local / "README.md").write_text("# my notes\n")
    result = zoo.push(local, "user/notes", dry_run=tmp_path / "up")
    assert (tmp_path / "up" / "README.md").read_text() == "# my notes\n"
    assert any("edited by hand" in n for n in result["notes"])


def test_hub_errors_are_one_line():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from zoo.hub import hub_error

    def http(status):
        response = httpx2.Response(status, request=httpx2.Request("POST", "http://hub.test/api/x"))
        return HfHubHTTPError(f"{status} error\nmore text", response=response)

    assert "HTTP 409" in str(hub_error(http(409), "me/m", push=True))
    assert "server error (HTTP 503" in str(hub_error(http(503), "me/m", push=True, retry="zoo push r me/m"))
    assert str(hub_error(http(403), "me/m", push=True)).endswith("(a token with write access to it)")
    assert "cannot reach the Hub" in str(hub_error(httpx2.ConnectError("refused"), "me/m", push=True))
    for status in (401, 404, 409, 500):
        assert "\n" not in str(hub_error(http(status), "me/m", push=True))


# -- tokens in what the Hub answers ----------------------------------------------------------
LEAKY = {  # error messages of a Hub that quotes a secret back
    "token-after-170-chars": "x" * 170 + "token=" + TOKEN,
    "token-at-195": "y" * 195 + TOKEN,
    "token-in-a-long-message": "z" * 100 + TOKEN + " " + "w" * 300,
    "an-hf-token-not-given": "q" * 170 + "token=" + OTHER,
    "userinfo-query-bearer": f"see https://user:{TOKEN}@hub.test/x?access_token={TOKEN} Authorization: Bearer {OTHER}",
}


def assert_no_token(proc, *tokens):
    out = proc.stdout + proc.stderr
    for token in (TOKEN, OTHER, *tokens):
        assert pieces(token, out) == [], out


@pytest.mark.parametrize("name", sorted(LEAKY))
def test_push_error_quoting_a_token_prints_no_part_of_it(server, run_dir, homes, name):
    server.inject(r"^/api/repos/create", status=400, message=LEAKY[name])
    try:
        proc = zoo_cli(server, homes(), "push", run_dir, f"user/leak-{name}")
    finally:
        server.clear_faults()
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: push to user/leak-{name} failed: the Hub answered HTTP 400: ")
    assert "***" in lines[0] and "retry with: zoo push" in lines[0]  # the message was quoted, the token blanked
    assert_no_token(proc)


@pytest.mark.slow
def test_server_error_on_commit_quoting_a_token_after_retries(server, run_dir, homes):
    # (Retry-After: 0, or the three retries wait 1 + 2 + 4 s)
    server.inject(r"^/api/models/user/leak-commit/commit/main", status=500, method="POST", times=4, message=LEAKY["token-at-195"],
                  retry_after=0)
    try:
        proc = zoo_cli(server, homes(), "push", run_dir, "user/leak-commit")
    finally:
        server.clear_faults()
    assert proc.returncode == 1 and "server error (HTTP 500: yyy" in proc.stderr and "retries did not help" in proc.stderr
    assert_no_token(proc)


@pytest.mark.slow
@pytest.mark.parametrize("name, debug", [("token-after-170-chars", ""), ("userinfo-query-bearer", "1")])
def test_predict_from_a_hub_quoting_a_token_prints_no_part_of_it(server, image, homes, name, debug):
    mark = len(server.requests)
    server.inject(r"^/api/models/user/leaky/", status=400, times=3, message=LEAKY[name])
    try:
        proc = zoo_cli(server, homes(), "predict", "hf-hub:user/leaky", image, ZOO_DEBUG=debug)
    finally:
        server.clear_faults()
    assert proc.returncode == 1 and any(r["status"] == 400 for r in server.requests[mark:])
    assert ("Traceback" in proc.stderr) == bool(debug)  # ZOO_DEBUG=1: the traceback, redacted too
    assert_no_token(proc)


def test_token_from_the_token_file_is_redacted_too(server, run_dir, homes):
    home = homes()
    home.mkdir(parents=True)
    (home / "token").write_text(FILE_TOKEN)
    mark = len(server.requests)
    message = "x" * 185 + f"token={FILE_TOKEN} and encoded {quote(FILE_TOKEN, safe='')}"  # the cut at 200 splits it
    server.inject(r"^/api/repos/create", status=400, message=message)
    try:
        proc = zoo_cli(server, home, "push", run_dir, "user/leak-file", token=None)
    finally:
        server.clear_faults()
    create = [r for r in server.requests[mark:] if r["path"] == "/api/repos/create"]
    assert create[0]["authorization"] == f"Bearer {FILE_TOKEN}"  # the token file's token was used
    assert proc.returncode == 1 and "HTTP 400" in proc.stderr
    assert_no_token(proc, FILE_TOKEN, quote(FILE_TOKEN, safe=""))


def test_huggingface_hub_log_lines_and_warnings_are_redacted(server, homes):
    _, stderr = client(server, homes(), f"""
        import logging, warnings
        from zoo import hub
        hub._quiet()  # what every Hub call of zoo does first
        logging.getLogger("huggingface_hub.file_download").error("request with token=%s failed", {TOKEN!r})
        warnings.warn("retrying with Authorization: Bearer " + {TOKEN!r})
        result = None
    """, stderr=True)
    assert "request with token=*** failed" in stderr and "Authorization: ***" in stderr
    assert pieces(TOKEN, stderr) == []


def test_a_token_in_a_staged_text_file_is_blanked_out(server, run_dir, tmp_path, homes):
    run, _ = copy_run(run_dir, tmp_path)
    (run / "README.md").write_text(f"# my notes\nuploaded with {OTHER}\n")  # edited by hand, with a token in it
    proc = zoo_cli(server, homes(), "push", run, "user/noted")
    assert proc.returncode == 0, proc.stderr
    assert "zoo: warning: README.md held a token: uploading it with the token blanked out (***)" in proc.stderr
    assert remote_text(server, "user/noted", "README.md") == "# my notes\nuploaded with ***\n"
    assert OTHER in (run / "README.md").read_text()  # the run directory is not changed
    assert stored(server, OTHER) == []


def test_redact_knows_the_stored_tokens_of_hf_auth_login(tmp_path, monkeypatch):
    from zoo.redact import known_tokens, redact

    stored_token, refresh = "zooSTOREDtokenVALUE77", "zooREFRESHtokenVALUE88"
    (tmp_path / "stored_tokens").write_text(f"[work]\nhf_token = {stored_token}\nrefresh_token = {refresh}\n")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    assert {stored_token, refresh} <= known_tokens()
    line = redact(f"failed for {stored_token[:12]} and {refresh}")
    assert pieces(stored_token, line) == pieces(refresh, line) == []


def test_redact_blanks_every_secret_before_a_cut():
    from zoo.redact import redact

    for message in LEAKY.values():
        line = redact(message)
        assert "***" in line and pieces(TOKEN, line) == pieces(OTHER, line) == []
        for cut in range(len(line)):  # wherever the line is cut afterwards
            assert pieces(TOKEN, line[:cut], 6) == []
    assert pieces(TOKEN, redact(f"cut by the server: {TOKEN[:9]}", tokens={TOKEN})) == []
    encoded = quote(FILE_TOKEN, safe="")
    assert pieces(encoded, redact(f"GET /x?t={encoded}&y=1", tokens={FILE_TOKEN})) == []
    kept = "missing key: fc.weight; use hf_hub_download and HF_TOKEN; a basic model; Authorization header missing; {\"password\": 0.93}"
    assert redact(kept, tokens={TOKEN}) == kept


# -- links in the run directory ----------------------------------------------------------------
def copy_run(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the run, and a secret file outside it."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / ".lock").unlink(missing_ok=True)
    (tmp_path / "secret.txt").write_text(SECRET)
    return run, tmp_path / "secret.txt"


def relink(path: Path, target: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def test_push_uploads_no_link_and_names_each_one(server, run_dir, tmp_path, homes):
    run, secret = copy_run(run_dir, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text(SECRET)
    relink(run / "README.md", secret)  # would have been published as the card
    relink(run / "run_config.yaml", secret)
    relink(run / "checkpoints" / "notes.txt", secret)
    relink(run / "checkpoints" / "more", outside)  # a folder
    relink(run / "extra.png", secret)
    relink(run / "accuracy.png", run / "loss.png")  # points inside the run directory: still a link
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")  # opening it would wait forever for a writer
    skipped = {"README.md": "a symbolic link", "run_config.yaml": "a symbolic link", "checkpoints/notes.txt": "a symbolic link",
               "checkpoints/more": "a symbolic link", "extra.png": "a symbolic link", "accuracy.png": "a symbolic link",
               "metrics.jsonl": "a FIFO"}

    proc = zoo_cli(server, homes(), "push", run, "user/links", "--with-checkpoints", timeout=120)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("zoo: warning: not uploading ")]
    assert sorted(warnings) == sorted(f"zoo: warning: not uploading {name}: it is {kind} (zoo uploads only regular files "
                                      "inside the run directory and follows no link)" for name, kind in skipped.items())
    assert tree(server, "user/links") == {".gitattributes", "README.md", "config.json", "model.safetensors", "loss.png",
                                          "confusion.png", "checkpoints/best.safetensors", "checkpoints/last.pt"}
    assert stored(server, SECRET) == []
    from zoo import cards

    assert cards.is_generated(remote_text(server, "user/links", "README.md"))  # generated, not the linked file
    # A dry run stages the same way.
    dry = ok(zoo_cli(server, homes(), "push", run, "user/links", "--with-checkpoints", "--dry-run", tmp_path / "up", "--json"))
    assert set(dry["files"]) == tree(server, "user/links") - {".gitattributes"}
    assert not any(p.is_symlink() for p in (tmp_path / "up").rglob("*"))


def test_push_skips_a_linked_checkpoints_folder(server, run_dir, tmp_path, homes):
    run, _ = copy_run(run_dir, tmp_path)
    shutil.move(run / "checkpoints", tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "notes.txt").write_text(SECRET)
    (run / "checkpoints").symlink_to(tmp_path / "elsewhere")
    proc = zoo_cli(server, homes(), "push", run, "user/linked-checkpoints", "--with-checkpoints")
    assert proc.returncode == 0, proc.stderr
    assert "zoo: warning: not uploading checkpoints: it is a symbolic link" in proc.stderr
    assert tree(server, "user/linked-checkpoints") == PUSHED
    assert stored(server, SECRET) == []


@pytest.mark.parametrize("name, target", [("model.safetensors", "outside"), ("config.json", "inside"), ("model.safetensors", "fifo")])
def test_push_refuses_needed_files_that_are_not_regular(server, run_dir, tmp_path, homes, name, target):
    run, _ = copy_run(run_dir, tmp_path)
    if target == "fifo":
        (run / name).unlink()
        os.mkfifo(run / name)
    else:
        moved = tmp_path / name if target == "outside" else run / f"copy-of-{name}"
        shutil.move(run / name, moved)
        (run / name).symlink_to(moved)
    mark = len(server.requests)
    proc = zoo_cli(server, homes(), "push", run, "user/refused", timeout=120)
    kind = "a FIFO" if target == "fifo" else "a symbolic link"
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"Error: {run / name} is {kind}: zoo uploads only regular files inside the run directory and follows no link; "
        "put the file itself there"]
    assert server.requests[mark:] == []  # refused before any request


@pytest.mark.slow
def test_push_of_the_best_checkpoint_during_training_follows_no_link(server, tmp_path, homes):
    """--hub-strategy best: push_best, called by a real fine-tune at its best epoch, stages like zoo push."""
    (tmp_path / "secret.txt").write_text(SECRET)
    result, stderr = client(server, homes(), f"""
        import os
        from pathlib import Path
        from types import SimpleNamespace
        from zoo import publish
        from zoo.errors import ZooError
        from zoo.trainer import FinetuneConfig, Trainer

        result = {{"refused": []}}

        def refused():
            try:
                publish.push_best(trainer, "user/best-links")
            except ZooError as exc:
                result["refused"].append(str(exc))

        def on_best(run_dir):
            if result["refused"]:
                return
            best, real = run_dir / "checkpoints" / "best.safetensors", run_dir / "checkpoints" / "real.safetensors"
            os.replace(best, real)
            best.symlink_to(real)  # a link inside the run directory: refused, it is the model
            refused()
            best.unlink()
            os.replace(real, best)
            folder, moved = run_dir / "checkpoints", run_dir / "moved"
            os.replace(folder, moved)
            folder.symlink_to(moved)  # the folder holding it is a link
            refused()
            folder.unlink()
            os.replace(moved, folder)
            config, kept = run_dir / "run_config.yaml", run_dir / "kept.yaml"
            os.replace(config, kept)
            config.symlink_to({str(tmp_path / "secret.txt")!r})  # skipped with a warning
            result["files"] = publish.push_best(trainer, "user/best-links")["files"]
            config.unlink()
            os.replace(kept, config)

        trainer = Trainer(FinetuneConfig.from_dict(dict(data="synthetic", **{RUN!r})), out=Path({str(tmp_path / "run")!r}),
                          subscribers=[SimpleNamespace(on_best=lambda trainer, run_dir: on_best(run_dir))])
        trainer.fit()
    """, stderr=True)
    rule = "zoo uploads only regular files inside the run directory and follows no link; put the file itself there"
    best = tmp_path / "run" / "checkpoints" / "best.safetensors"
    assert result["refused"] == [f"{best} is a symbolic link: {rule}", f"{best} is reached through the symbolic link checkpoints: {rule}"]
    assert "zoo: warning: not uploading run_config.yaml: it is a symbolic link" in stderr
    assert set(result["files"]) == {"README.md", "config.json", "model.safetensors", "metrics.jsonl"}
    assert tree(server, "user/best-links") == {".gitattributes", *result["files"]}
    assert stored(server, SECRET) == []


# -- last: the token went nowhere ---------------------------------------------------------------
def test_token_appears_in_no_file_and_no_output(server, run_dir, pushed, tmp_path_factory):
    assert any(r["authorization"] == f"Bearer {TOKEN}" for r in server.requests)  # it was used
    base = tmp_path_factory.getbasetemp()
    files = [p for p in base.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000]
    leaks = [p for p in files if TOKEN.encode() in p.read_bytes()]
    assert leaks == []  # run directories, the Hub's storage, dry-run folders, HF_HOME caches
    assert server.root.is_relative_to(base) and run_dir.is_relative_to(base)
    assert OUTPUTS and not any(pieces(TOKEN, out) or pieces(OTHER, out) for out in OUTPUTS)
