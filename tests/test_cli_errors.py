"""A user's mistake on the command line gives one ``error:`` line naming the fix and exit status 2, not a
traceback; ``--verbose`` shows the traceback."""

from __future__ import annotations

import pytest

from transferkit.common.cli import main


@pytest.mark.parametrize(("argv", "says"), [
    (["vision", "evaluate", "--model", "{tmp}/no-such-model", "--data", "{tmp}"], "no-such-model"),
    (["vision", "fit", "--model", "packaged:no_such_net", "--train", "{data}"], "unknown packaged encoder 'no_such_net'"),
    (["vision", "fit", "--model", "someone/not-downloaded", "--train", "{data}"], "hf download someone/not-downloaded"),
    (["audio", "fit", "--model", "x", "--train", "{tmp}/nothing.txt"], "expected a folder of label sub-folders"),
])
def test_expected_errors_print_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, says):
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / label / "x.png")
    argv = [a.format(tmp=tmp_path, data=tmp_path / "data") for a in argv]
    assert main([*argv, "--output-dir", str(tmp_path / "run")] if "fit" in argv else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0] and "Traceback" not in err[0]


def test_verbose_shows_the_traceback(tmp_path, capsys):
    assert main(["--verbose", "vision", "evaluate", "--model", str(tmp_path / "gone"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_a_bug_is_not_swallowed(monkeypatch):
    from transferkit.vision import cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_weights", broken)
    with pytest.raises(ZeroDivisionError):
        main(["vision", "fit", "--model", "m", "--train", "t", "--labels", "a", "b"])
