"""`draftwise train-drafter` argument checks that need no model."""

from __future__ import annotations

import pytest

from draftwise.actors.cli import main


@pytest.mark.parametrize("suffixes", ["md", ".py,rst", ",", "."])
def test_train_drafter_rejects_bad_suffixes(tmp_path, capsys, suffixes):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-drafter", "--out", str(tmp_path / "out"), "--source-suffixes", suffixes])
    assert exit_info.value.code == 1
    assert f"--source-suffixes {suffixes!r} is invalid" in capsys.readouterr().err


def test_train_drafter_rejects_window_below_steps(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-drafter", "--out", str(tmp_path / "out"), "--window", "4"])
    assert exit_info.value.code == 1
    assert "--window 4" in capsys.readouterr().err
