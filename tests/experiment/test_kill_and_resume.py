"""scripts/kill_and_resume.py counts only the kills that landed, and fails when too few did,
tested on stand-in processes instead of the experiment."""

import json
import signal
import subprocess
import sys

import pytest

from experiment_helpers import kill_and_resume_script

pytestmark = pytest.mark.slow  # end-to-end runs of the experiment

script = kill_and_resume_script()


def stand_in(then: str) -> list[str]:
    """A process that logs that stage 'sft' started, then runs `then` (Python)."""
    marker = script.STAGE_STARTED.format(stage="sft") + "running."
    return [sys.executable, "-c",
            f"import signal, sys, time\nprint({marker!r}, file=sys.stderr, flush=True)\n{then}"]


def test_a_kill_lands_only_when_the_signal_ends_the_run():
    killed = script.run_until_killed(stand_in("time.sleep(60)"), "sft", 0.2)
    assert killed["killed"] and killed["returncode"] == -signal.SIGKILL
    ended_first = script.run_until_killed(stand_in("sys.exit(0)"), "sft", 5.0)
    assert not ended_first["killed"] and ended_first["returncode"] == 0
    # rso_jax.main saves its state on SIGTERM and exits with 128 + 15: that kill landed.
    preempted = script.run_until_killed(
        stand_in("signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\ntime.sleep(60)"),
        "sft", 0.2, sig=signal.SIGTERM)
    assert preempted["killed"] and preempted["returncode"] == 143
    assert not script.ended_by(1, signal.SIGTERM) and not script.ended_by(0, signal.SIGKILL)


def test_too_few_landed_kills_are_named_unless_allowed():
    attempts = [{"stage": "sft", "killed": True}, {"stage": "ranker", "killed": False},
                {"stage": "sample", "killed": False}]
    why = script.missed_kills(attempts, 3, 0)
    assert why.startswith("only 1 of 3 kills landed") and "['ranker', 'sample']" in why
    assert "--allowed_missed_kills" in why
    assert script.missed_kills(attempts, 3, 1).startswith("only 1 of 3")
    assert script.missed_kills(attempts, 3, 2) is None


@pytest.mark.parametrize("allowed, code", [(0, 1), (2, 0)])
def test_the_script_reports_kills_landed_and_fails_on_a_shortfall(tmp_path, monkeypatch, capsys,
                                                                  allowed, code):
    landed = iter([True, False, False])
    monkeypatch.setattr(script, "run_to_end",
                        lambda command: subprocess.CompletedProcess(command, 0, "", ""))
    monkeypatch.setattr(script, "stage_seconds", lambda work_dir, stages: {"sft": 1.0,
                                                                           "ranker": 2.0})
    monkeypatch.setattr(script, "run_until_killed", lambda command, stage, delay: {
        "stage": stage, "delay": delay, "killed": next(landed), "returncode": 0, "seconds": 0})
    monkeypatch.setattr(script, "differences", lambda reference, killed: [])
    output = tmp_path / "kill_and_resume.json"
    assert script.main(["--kills", "3", "--allowed_missed_kills", str(allowed),
                        "--work_dir", str(tmp_path / "runs"), "--output", str(output)]) == code
    report = json.loads(output.read_text())
    assert report["identical"] and report["kills"] == 3 and report["kills_landed"] == 1
    assert report["kills_landed_per_stage"] == {"sft": 1, "ranker": 0}
    assert ("only 1 of 3 kills landed" in capsys.readouterr().err) == (code == 1)
