"""`draftwise bench` argument checks that need no model."""

from __future__ import annotations

import pytest

from draftwise.actors.cli import main


def test_bench_sessions_needs_ids(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "sessions"])
    assert exit_info.value.code == 2
    assert "--ids" in capsys.readouterr().err


def test_bench_tuner_needs_workload(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "tuner"])
    assert exit_info.value.code == 2
    assert "--workload" in capsys.readouterr().err
