"""zoo doctor: what it reports, against a real Hub server and a closed port; never the token."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hubserver import HubServer

from zoo import forkserver

TOKEN = "hf_doctorPLANTEDtoken987"


def doctor(*args, **env) -> subprocess.CompletedProcess:
    return forkserver.run([sys.executable, "-m", "zoo", "doctor", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_TOKEN": TOKEN, **env})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub")) as s:
        yield s


def test_doctor_reports_versions_devices_plugins_registry_and_caches(run, tmp_path, monkeypatch):
    (tmp_path / "reg.yaml").write_text("backbones: {}\n")
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "reg.yaml"))
    result = run("doctor", "--offline", "--json")
    assert result.exit_code == 0, result.stderr
    r = json.loads(result.stdout)
    import timm
    import torch

    assert r["versions"]["torch"] == torch.__version__ and r["versions"]["timm"] == timm.__version__
    assert r["devices"]["cpu_cores"] == os.cpu_count() and r["devices"]["distributed"]["gloo"] is True
    assert {"zoo.builtins.heads", "zoo.builtins.freeze", "zoo.builtins.datasets"} <= {p["name"] for p in r["plugins"]}
    assert all(p["status"] == "ok" for p in r["plugins"])
    roles = {f["role"]: f for f in r["registry_files"]}
    assert roles["packaged"]["exists"] and roles["ZOO_REGISTRY"]["path"] == str(tmp_path / "reg.yaml")
    assert "reachable" not in r["hub"]  # --offline: not contacted
    assert {c["name"] for c in r["caches"]} == {"zoo", "huggingface hub"}
    table = run("doctor", "--offline")
    assert table.exit_code == 0 and "registry files" in table.stdout and "caches" in table.stdout


def test_doctor_says_whether_the_hub_answers_and_never_shows_the_token(server):
    up = doctor("--json", HF_ENDPOINT=server.url)
    assert up.returncode == 0, up.stderr
    hub = json.loads(up.stdout)["hub"]
    assert hub["endpoint"] == server.url and hub["reachable"] is True and hub["token_set"] is True
    down = doctor("--json", HF_ENDPOINT="http://127.0.0.1:9")
    hub = json.loads(down.stdout)["hub"]
    assert hub["reachable"] is False and hub["error"]
    shown = doctor(HF_ENDPOINT="http://127.0.0.1:9")
    assert shown.returncode == 0 and "reachable" in shown.stdout
    assert all(TOKEN not in p.stdout + p.stderr for p in (up, down, shown))


def test_doctor_redacts_a_password_in_the_endpoint():
    secret = "doctorENDPOINTpassword55"
    down = doctor("--json", HF_ENDPOINT=f"http://me:{secret}@127.0.0.1:9")
    hub = json.loads(down.stdout)["hub"]
    assert hub["endpoint"] == "http://me:***@127.0.0.1:9" and hub["reachable"] is False
    assert not any(secret[i:i + 6] in down.stdout + down.stderr for i in range(len(secret) - 5))
