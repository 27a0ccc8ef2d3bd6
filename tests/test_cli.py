"""Tests for ``python -m bnlib``: arguments, help, outputs and errors; no network access."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bnlib import cli
from bnlib.history import History
from synthetic import synthetic_mnist

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--epochs", "--batch-size", "--lr", "--optimizer", "--momentum", "--seed", "--bn",
         "--data-dir", "--no-download", "--out", "--device", "--threads", "--train-subset",
         "--no-progress"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fake_loader(monkeypatch):
    """Replace load_mnist in the CLI by small synthetic splits; record how it was called."""
    calls = []

    def load(split, root=None, download=True):
        calls.append((split, root, download))
        return synthetic_mnist(200 if split == "train" else 100, seed=len(calls))

    monkeypatch.setattr(cli, "load_mnist", load)
    return calls


def compare_subparser() -> argparse.ArgumentParser:
    subparsers = next(action for action in cli.build_parser()._actions
                      if isinstance(action, argparse._SubParsersAction))
    return subparsers.choices["compare"]


def test_compare_help_lists_and_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in text
    assert "examples:" in text and "BNLIB_DATA" in text
    options = [a for a in compare_subparser()._actions if a.option_strings and a.dest != "help"]
    assert sorted(o for a in options for o in a.option_strings) == sorted(FLAGS)
    assert all(action.help for action in options)


def test_top_level_help_runs_as_a_module():
    environment = os.environ | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "bnlib", "--help"], capture_output=True,
                            text=True, cwd=ROOT, env=environment, timeout=120)
    assert result.returncode == 0
    assert "compare" in result.stdout


def test_compare_writes_table_curves_and_history(fake_loader, tmp_path, capsys):
    out = tmp_path / "new" / "results"
    torch.set_num_threads(2)  # --threads must change it (the fixture restores it afterwards)
    status = cli.main(["compare", "--epochs", "2", "--batch-size", "16", "--lr", "0.02",
                       "--seed", "3", "--data-dir", "somewhere", "--out", str(out),
                       "--threads", "1", "--no-progress", "--no-download", "--bn", "bnlib"])
    assert status == 0
    assert fake_loader == [("train", "somewhere", False), ("test", "somewhere", False)]
    assert torch.get_num_threads() == 1
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["epoch", "model", "train", "loss", "train", "acc", "test",
                                "loss", "test", "acc"]
    assert [row.split()[0] for row in table[1:5]] == ["1", "1", "2", "2"]
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "history.json"]
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")
    record = json.loads((out / "history.json").read_text())
    assert record["config"]["batch_size"] == 16 and record["config"]["lr"] == 0.02
    assert record["bn"] == "bnlib"
    histories = {name: History.from_dict(h) for name, h in record["histories"].items()}
    assert set(histories) == {"BN", "no BN"}
    assert all(len(h.test_acc) == 2 and len(h.step_loss) == 2 * 13 for h in histories.values())
    assert f"{histories['BN'].test_acc[1]:.4f}" in table[3]


def test_train_subset_limits_the_training_set(fake_loader, tmp_path, capsys):
    status = cli.main(["compare", "--epochs", "1", "--train-subset", "64", "--out",
                       str(tmp_path), "--no-progress"])
    assert status == 0
    record = json.loads((tmp_path / "history.json").read_text())
    assert len(record["histories"]["BN"]["step_loss"]) == 2


def test_missing_data_exits_2_with_a_clear_message(tmp_path, capsys):
    out = tmp_path / "out"
    status = cli.main(["compare", "--data-dir", str(tmp_path), "--no-download", "--out", str(out)])
    assert status == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    assert str(tmp_path) in captured.err and "BNLIB_DATA" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()


@pytest.mark.parametrize("arguments, words", [
    (["--batch-size", "1"], ["batch_size", ">= 2"]),
    (["--epochs", "0"], ["--epochs", ">= 1"]),
    (["--optimizer", "rmsprop"], ["--optimizer", "rmsprop"]),
    (["--device", "cdua"], ["device", "cdua"]),
])
def test_bad_arguments_exit_2_with_usage(arguments, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage: python -m bnlib compare" in error
    for word in words:
        assert word in error


def test_format_table_has_one_row_per_epoch_and_model():
    history = History(train_loss=[0.5, 0.25], train_acc=[0.8, 0.9], test_loss=[0.4, 0.3],
                      test_acc=[0.85, 0.875])
    rows = cli.format_table({"BN": history, "no BN": history}).splitlines()
    assert len(rows) == 5
    assert rows[4].split() == ["2", "no", "BN", "0.2500", "0.9000", "0.3000", "0.8750"]


def real_mnist_root() -> str | None:
    root = os.environ.get("BNLIB_DATA")
    if root and (Path(root) / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").is_file():
        return root
    return None


@pytest.mark.skipif(real_mnist_root() is None, reason="needs MNIST under $BNLIB_DATA")
def test_compare_on_a_subset_of_real_mnist(tmp_path, capsys):
    status = cli.main(["compare", "--epochs", "1", "--train-subset", "2000", "--no-download",
                       "--data-dir", real_mnist_root(), "--out", str(tmp_path), "--no-progress"])
    assert status == 0
    histories = json.loads((tmp_path / "history.json").read_text())["histories"]
    assert all(h["test_acc"][0] > 0.6 for h in histories.values())
