"""Smoke tests of the examples (examples/*.py, loaded by path) and of the `fastrnn` command:
each runs with small settings for a few seconds and must produce a sensible result.

The examples live beside the package, not in it: where there is no examples/ directory next
to tests/ (an installed package tested elsewhere), those tests skip.
"""
import importlib.util
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    path = EXAMPLES / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"no {path} (examples are not part of the installed package)")
    spec = importlib.util.spec_from_file_location(f"fastrnn_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_char_rnn_loss_falls(capsys):
    example = load_example("char_rnn")
    result = example.main(["--epochs", "15", "--max-chars", "20000", "--hidden", "64",
                           "--sample-length", "40", "--log-every", "5", "--no-progress"])
    out = capsys.readouterr().out
    assert result.epochs == 15
    # untrained: about ln V per character; a few seconds of training take off > 1 nat
    assert abs(result.train_before - math.log(result.vocab_size)) < 0.2
    assert result.train_after < result.train_before - 1.0
    assert result.val_after < result.val_before - 1.0
    assert len(result.sample) == 40 and set(result.sample) <= set(result.vocab)
    assert "before training" in out and "epoch   15" in out and "sample" in out


def test_char_rnn_takes_a_text_file(tmp_path, capsys):
    example = load_example("char_rnn")
    path = tmp_path / "tiny.txt"
    path.write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    result = example.main([str(path), "--epochs", "10", "--hidden", "32", "--streams", "4",
                           "--sample-length", "10", "--no-progress"])
    assert str(path) in capsys.readouterr().out
    assert result.vocab_size == len(set("the cat sat on the mat. "))
    assert result.train_after < result.train_before - 1.0


def test_digits_accuracy(capsys):
    pytest.importorskip("sklearn")
    example = load_example("digits")
    accuracy = example.main(["--hidden", "32", "--epochs", "8", "--lr", "0.01",
                             "--no-progress"])
    assert accuracy > 0.8
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("series", ["auto", "mackey-glass"])
def test_forecast_beats_naive(series, capsys):
    example = load_example("forecast")
    result = example.main(["--series", series, "--epochs", "8", "--max-length", "4000",
                           "--window", "32", "--hidden", "16", "--no-progress"])
    assert 0 < result["rmse"] < result["naive_rmse"]
    assert "naive" in capsys.readouterr().out


def test_fastrnn_command_quick(capsys):
    from fastrnn.apps.cli import main, time_backends
    assert main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "before training" in out and "after" in out and "sample" in out
    assert "cython is" in out
    assert callable(time_backends)


def test_fastrnn_command_off_a_terminal(tmp_path):
    """Output to files (CI, a log, | tee): plain lines only, never a progress bar's
    carriage-return fragments, and not many of them."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.run([sys.executable, "-m", "fastrnn", "--quick"], stdout=stdout,
                              stderr=stderr, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, err.read_text(errors="replace")[-2000:]
    for path in (out, err):
        data = path.read_bytes()
        assert b"\r" not in data, path.name
        assert data.count(b"\n") < 200, path.name
    text = out.read_text(encoding="utf-8")
    assert "before training" in text and "epoch" in text and "cython is" in text


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_fastrnn_command_on_a_terminal_shows_one_bar(monkeypatch, capsys):
    """The time budget is trained in several fit calls; the terminal sees one bar."""
    pytest.importorskip("tqdm")
    from fastrnn.apps.cli import main
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["--quick", "--minutes", "0.03", "--repeats", "1",
                 "--sample-length", "5"]) == 0
    bar = terminal.getvalue()
    assert bar.count("train:   0%") == 1 and "fit:" not in bar and " s, epoch=" in bar
    assert "after" in capsys.readouterr().out


def test_subcommands_dispatch(tmp_path, capsys):
    from fastrnn.apps.cli import main
    assert main(["gradflow", "--steps", "10", "--budget", "64",
                 "--out", str(tmp_path / "flow.png")]) == 0
    assert (tmp_path / "flow.png").stat().st_size > 1000
    assert main(["lag", "--lags", "4", "--T", "8", "--seeds", "1", "--budget", "400",
                 "--jobs", "1", "--out", ""]) == 0
    assert "lag" in capsys.readouterr().out
