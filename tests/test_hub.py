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
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

import zoo
from conftest import _reset, make_image_folder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hubserver import HubServer  # noqa: E402

TOKEN = "hf_zooPLANTEDtoken123secretXYZ"
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
    proc = subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], env=hub_env(server, home, token=token, **extra),
                          capture_output=True, text=True, timeout=timeout, cwd=home.parent)
    OUTPUTS.extend([proc.stdout, proc.stderr])
    return proc


def client(server: HubServer, home: Path, code: str, *, token: str | None = TOKEN, **extra):
    """Run Python `code` that assigns `result`; return it (JSON)."""
    script = textwrap.dedent(code) + "\nimport json as _j\nprint('@@' + _j.dumps(result))\n"
    proc = subprocess.run([sys.executable, "-c", script], env=hub_env(server, home, token=token, **extra),
                          capture_output=True, text=True, timeout=300, cwd=home.parent)
    OUTPUTS.extend([proc.stdout, proc.stderr])
    assert proc.returncode == 0 and "@@" in proc.stdout, proc.stderr
    return json.loads(proc.stdout.rsplit("@@", 1)[1])


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
    logits = client(server, homes(), f"""
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
    proc = zoo_cli(server, homes(), "predict", "hf-hub:user/linear", image, HF_HUB_OFFLINE="1")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    assert lines[0].startswith("Error: hf-hub:user/linear: offline mode") and "HF_HUB_OFFLINE" in lines[0]


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
                 ("compare", "hf-hub:user/pickled", "--data", data, "--img-size", "32")):
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


# -- last: the token went nowhere ---------------------------------------------------------------
def test_token_appears_in_no_file_and_no_output(server, run_dir, pushed, tmp_path_factory):
    assert any(r["authorization"] == f"Bearer {TOKEN}" for r in server.requests)  # it was used
    base = tmp_path_factory.getbasetemp()
    files = [p for p in base.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000]
    leaks = [p for p in files if TOKEN.encode() in p.read_bytes()]
    assert leaks == []  # run directories, the Hub's storage, dry-run folders, HF_HOME caches
    assert server.root.is_relative_to(base) and run_dir.is_relative_to(base)
    assert OUTPUTS and not any(TOKEN in out for out in OUTPUTS)
