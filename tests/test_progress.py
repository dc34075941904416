"""The funnel progress: a bar on a terminal, plain lines in a log (here stderr is captured, not a terminal)."""

from __future__ import annotations

from apigen_mt.pipeline.run import progress
from apigen_mt.pipeline.run.progress import FunnelProgress


def test_a_log_gets_plain_lines_with_the_funnel(capsys, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    with FunnelProgress(3, label="proposals") as bar:
        bar.finished("accepted")
        bar.retried()
        bar.finished("failed")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("proposals 1/3: accepted 1 | rejected 0 | failed 0 (")
    assert lines[-1].startswith("proposals 2/3: accepted 1 | rejected 0 | failed 1 | retried 1 (")


def test_lines_are_spaced_out_and_a_disabled_bar_is_silent(capsys):
    with FunnelProgress(2) as bar:
        bar.finished("rejected")
        bar.finished("rejected")
    assert capsys.readouterr().err.splitlines() == ["trials 2/2: accepted 0 | rejected 2 | failed 0 (0m00s)"]
    with FunnelProgress(2, enabled=False) as bar:
        bar.finished("accepted")
    assert capsys.readouterr().err == ""
