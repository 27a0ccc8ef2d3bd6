"""Tests for ``python -m bnlib``: arguments, help, outputs and errors; no network access."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic import synthetic_mnist

from bnlib import cli, training
from bnlib.training import History

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--epochs", "--batch-size", "--lr", "--optimizer", "--momentum", "--seed", "--bn",
         "--data-dir", "--no-download", "--out", "--device", "--threads", "--train-subset",
         "--engine", "--no-progress"]

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


def test_every_engine_runs_and_manual_and_autograd_give_matching_histories(fake_loader, tmp_path,
                                                                        capsys):
    records = {}
    for engine in ("auto", "manual", "autograd"):
        fake_loader.clear()  # the same synthetic data for every run
        out = tmp_path / engine
        status = cli.main(["compare", "--epochs", "2", "--train-subset", "96", "--batch-size",
                           "16", "--engine", engine, "--out", str(out), "--no-progress"])
        assert status == 0
        records[engine] = json.loads((out / "history.json").read_text())
        assert records[engine]["config"]["engine"] == engine
    histories = {engine: {name: History.from_dict(h) for name, h in record["histories"].items()}
                 for engine, record in records.items()}
    for name, auto in histories["auto"].items():  # auto picks manual for both networks
        assert auto.step_loss == histories["manual"][name].step_loss
    for name, manual in histories["manual"].items():
        autograd = histories["autograd"][name]
        assert len(manual.step_loss) == len(autograd.step_loss) == 12
        assert manual.step_loss == pytest.approx(autograd.step_loss, rel=0, abs=1e-5)
        # The engines round differently, so an example whose two largest logits almost tie may
        # be classified differently: accuracies may differ by one example per evaluation.
        for mine, theirs, examples in [(manual.train_acc, autograd.train_acc, 96),
                                       (manual.test_acc, autograd.test_acc, 100)]:
            assert len(mine) == len(theirs)
            assert all(abs(a - b) <= 1 / examples + 1e-12 for a, b in zip(mine, theirs))


def test_importing_bnlib_and_its_cli_leaves_matplotlib_unimported():
    code = ("import sys, bnlib, bnlib.cli; assert 'matplotlib' not in sys.modules; "
            "bnlib.plot_comparison; assert 'matplotlib' in sys.modules")
    environment = os.environ | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr


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


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


BAD_ARGUMENTS = [
    (["--batch-size", "1"], ["batch_size", ">= 2"]),
    (["--epochs", "0"], ["--epochs", ">= 1"]),
    (["--optimizer", "rmsprop"], ["--optimizer", "rmsprop"]),
    (["--lr", "inf"], ["--lr", "positive finite", "inf"]),
    (["--lr", "nan"], ["--lr", "positive finite", "nan"]),
    (["--lr", "-0.1"], ["--lr", "positive finite"]),
    (["--momentum", "nan"], ["momentum"]),
    (["--device", "cdua"], ["device", "'cdua'", "not a torch device"]),
    (["--device", "foo"], ["device", "'foo'", "not a torch device"]),
    (["--device", "mps"], ["device 'mps' is not available here", "use 'cpu'"]),
    (["--device", "meta"], ["device 'meta' is not available here", "use 'cpu'"]),
    (["--engine", "jit"], ["--engine", "invalid choice", "'jit'", "'manual'"]),
    (["--train-subset", "0"], ["--train-subset", ">= 2"]),
    (["--train-subset", "1"], ["--train-subset", ">= 2"]),
    (["--out", "{file}"], ["--out", "is a file", "a folder you can write to"]),
    (["--out", "{file}/results"], ["lies under the file", "a folder you can write to"]),
    (["--out", "/proc/bnlib-results"], ["cannot write into /proc", "a folder you can write to"]),
]
if not torch.cuda.is_available():
    BAD_ARGUMENTS.append((["--device", "cuda"], ["device 'cuda' is not available here", "'cpu'"]))


@pytest.mark.parametrize("arguments, words", BAD_ARGUMENTS)
def test_bad_arguments_exit_2_with_usage_before_reading_data(arguments, words, a_file,
                                                               fake_loader, capsys):
    arguments = [argument.format(file=a_file) for argument in arguments]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", *arguments, "--no-progress"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage: python -m bnlib compare" in error and "Traceback" not in error
    for word in words:
        assert word in error
    assert fake_loader == [], "the data were read before the arguments were checked"


def test_out_check_leaves_nothing_behind(tmp_path, fake_loader, capsys):
    out = tmp_path / "results"
    with pytest.raises(SystemExit):
        cli.main(["compare", "--out", str(out), "--lr", "0"])
    cli._check_out(out)
    assert list(tmp_path.iterdir()) == []


def test_out_in_a_folder_that_refuses_writes_exits_2(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "mkdtemp", refuse)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--out", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    assert f"cannot write into {tmp_path} (Permission denied)" in capsys.readouterr().err


def test_train_subset_larger_than_the_set_exits_2_before_training(fake_loader, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setattr(cli, "compare", lambda *args, **kwargs: pytest.fail("training started"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--train-subset", "201", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--train-subset 201" in error and "only 200 images" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("problem", ["under a file", "unreadable"])
def test_an_unreadable_data_folder_exits_2_without_a_traceback(problem, a_file, tmp_path,
                                                               monkeypatch, capsys):
    if problem == "unreadable":  # root reads everything: make the loader meet the OS error
        def unreadable(split, root=None, download=True):
            raise PermissionError(13, "Permission denied", str(a_file))

        monkeypatch.setattr(cli, "load_mnist", unreadable)
    status = cli.main(["compare", "--data-dir", str(a_file / "data"), "--no-download",
                       "--out", str(tmp_path / "out")])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "Traceback" not in error
    assert str(a_file) in error
    assert not (tmp_path / "out").exists()


def test_a_diverged_run_writes_strict_json_with_null(fake_loader, tmp_path, capsys):
    status = cli.main(["compare", "--epochs", "1", "--lr", "1e30", "--batch-size", "16",
                       "--out", str(tmp_path), "--no-progress"])
    assert status == 0

    def refuse(constant):
        raise AssertionError(f"history.json holds {constant}, which strict JSON forbids")

    record = json.loads((tmp_path / "history.json").read_text(), parse_constant=refuse)
    losses = record["histories"]["no BN"]["step_loss"]
    assert None in losses and all(isinstance(x, float) for x in losses if x is not None)
    history = History.from_dict(record["histories"]["no BN"])
    assert math.isnan(history.train_loss[0])


def interrupt_after(epochs: int):
    """``compare`` that raises KeyboardInterrupt, as Ctrl-C would, once ``epochs`` have ended."""
    def interrupted_compare(*args, on_epoch, **kwargs):
        def on_epoch_then_interrupt(done, histories):
            on_epoch(done, histories)
            if done == epochs:
                raise KeyboardInterrupt

        return training.compare(*args, on_epoch=on_epoch_then_interrupt, **kwargs)

    return interrupted_compare


def test_ctrl_c_keeps_the_finished_epochs(fake_loader, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "compare", interrupt_after(2))
    status = cli.main(["compare", "--epochs", "5", "--batch-size", "16", "--out", str(tmp_path),
                       "--no-progress"])
    assert status == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"interrupted after 2 of 5 epochs; wrote the finished epochs "
                                    f"to {tmp_path / 'curves.png'} and {tmp_path / 'history.json'}")
    assert [row.split()[0] for row in captured.out.splitlines()[1:]] == ["1", "1", "2", "2"]
    record = json.loads((tmp_path / "history.json").read_text())
    assert record["epochs_done"] == 2 and record["config"]["epochs"] == 5
    assert all(len(h["test_acc"]) == 2 and len(h["step_loss"]) == 2 * 13
               for h in record["histories"].values())
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_ctrl_c_in_the_first_epoch_writes_nothing(fake_loader, tmp_path, monkeypatch, capsys):
    def interrupted_compare(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "compare", interrupted_compare)
    out = tmp_path / "out"
    assert cli.main(["compare", "--out", str(out), "--no-progress"]) == 130
    assert "nothing was written" in capsys.readouterr().err
    assert not out.exists()


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


GOOD_LAYER = """\
import torch
from torch import nn


class TorchLike(nn.BatchNorm2d):
    def _check_input_dim(self, input):  # accepts (N, C) and (N, C, H, W), as BatchNorm1d/2d do
        if input.dim() not in (2, 4):
            raise ValueError("expected 2D or 4D input")


class KerasMomentum(TorchLike):
    def forward(self, x):
        if self.training and self.momentum is not None:
            self.momentum, keep = 1 - self.momentum, self.momentum
            try:
                return super().forward(x)
            finally:
                self.momentum = keep
        return super().forward(x)


NOT_A_LAYER = 3
"""


@pytest.fixture
def layer_file(tmp_path) -> Path:
    path = tmp_path / "my_bn.py"
    path.write_text(GOOD_LAYER)
    return path


def test_grade_prints_the_report_and_exits_0_when_every_check_passes(layer_file, capsys):
    assert cli.main(["grade", f"{layer_file}:TorchLike"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("TorchLike: PASSED") and "running statistics (N, C, H, W)" in out


def test_grade_exits_1_and_names_the_mistake_when_a_check_fails(layer_file, capsys):
    assert cli.main(["grade", f"{layer_file}:KerasMomentum", "--dims", "1"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("KerasMomentum: FAILED") and "Keras-style momentum" in out
    assert "(N, C, H, W)" not in out  # --dims 1 grades (N, C) inputs only


@pytest.mark.parametrize("target, words", [
    ("{dir}/missing.py:Layer", ["no such file", "missing.py"]),
    ("{file}", ["expected FILE.py:CLASS"]),
    ("{file}:Missing", ["has no 'Missing'", "KerasMomentum, TorchLike"]),
    ("{file}:NOT_A_LAYER", ["NOT_A_LAYER", "not an nn.Module subclass"]),
    ("{file}:nn", ["nn", "not an nn.Module subclass"]),
    ("{broken}:Layer", ["broken.py:2: syntax error"]),
    ("{raising}:Layer", ["importing", "raised ImportError: no luck"]),
])
def test_grade_bad_input_exits_2_with_one_line_and_no_traceback(target, words, layer_file,
                                                                 tmp_path, capsys):
    (tmp_path / "broken.py").write_text("import torch\nclass Layer(:\n")
    (tmp_path / "raising.py").write_text("raise ImportError('no luck')\n")
    target = target.format(dir=tmp_path, file=layer_file, broken=tmp_path / "broken.py",
                           raising=tmp_path / "raising.py")
    assert cli.main(["grade", target]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    for word in words:
        assert word in captured.err


def test_grade_runs_as_a_module(layer_file):
    environment = os.environ | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "bnlib", "grade", f"{layer_file}:TorchLike",
                             "--dims", "1"], capture_output=True, text=True, cwd=ROOT,
                            env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "PASSED" in result.stdout
