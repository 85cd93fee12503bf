"""zoo-tensorboard: real runs write real event files, read back with TensorBoard's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

FAST = ["--data", "digits", "--shots", "10", "--no-pretrained", "--img-size", "32", "--batch-size", "16",
        "--aug", "none", "--device", "cpu", "--quiet"]


def scalars(folder: Path) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_matches_metrics(logged: dict, records: list[dict]) -> None:
    for record in records:
        for key, value in record.items():
            if key == "epoch":
                continue
            tag = key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key
            assert logged[tag][record["epoch"]] == pytest.approx(value, rel=1e-6, abs=1e-9), (tag, record)
    for tag, steps in logged.items():
        if not tag.startswith("best/"):
            assert sorted(steps) == [r["epoch"] for r in records], tag  # no extra or repeated epochs


def test_scalars_equal_metrics_jsonl(cli, tmp_path):
    run = tmp_path / "run"
    summary = json.loads(cli("finetune", "test_resnet", *FAST, "--epochs", "2", "--out", run, "--json").stdout)
    logged = scalars(run / "tensorboard")
    records = history(run)
    assert {"train/loss", "train/top1", "val/loss", "val/top1", "val/top5", "lr", "images_per_s"} <= set(logged)
    assert_matches_metrics(logged, records)
    assert logged["best/top1"] == {summary["epoch"]: pytest.approx(summary["top1"], rel=1e-6)}
    assert logged["best/loss"] == {summary["epoch"]: pytest.approx(summary["loss"], rel=1e-6)}

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "run_config/text_summary" in acc.Tags()["tensors"]  # the settings, as text


def test_env_dir_and_resume(cli, tmp_path, monkeypatch):
    shared = tmp_path / "tb"
    monkeypatch.setenv("ZOO_TENSORBOARD_DIR", str(shared))
    run = tmp_path / "runs" / "digits-r"
    cli("finetune", "test_resnet", *FAST, "--epochs", "1", "--out", run)
    cli("finetune", "--resume", run, "--epochs", "2", "--quiet")
    assert not (run / "tensorboard").exists()
    assert [p.name for p in shared.iterdir()] == ["digits-r"]
    assert_matches_metrics(scalars(shared / "digits-r"), history(run))
    assert [r["epoch"] for r in history(run)] == [1, 2]


def test_only_the_main_process_writes_under_torchrun(cli, tmp_path):
    run = tmp_path / "ddp"
    cli("finetune", "test_resnet", *FAST, "--epochs", "1", "--nproc-per-node", "2", "--out", run)
    files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    assert_matches_metrics(scalars(run / "tensorboard"), history(run))
