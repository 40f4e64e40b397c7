"""Stop signals: a request, not an exception where the signal lands; handlers put back; a
second signal ends even a process stuck in a blocking call. (The experiment stopped by Ctrl-C
end to end: tests/test_experiment.py.)"""

import os
import signal
import subprocess
import sys
import time

import pytest

from rso_jax.runtime import stop_signals
from t5_helpers import REPO_ROOT


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_signal_is_a_request_that_safe_points_act_on():
    before = {signum: signal.getsignal(signum) for signum in stop_signals.NAMES}
    with stop_signals.listening():
        stop_signals.stop_if_requested()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt here
        assert wait_for(lambda: stop_signals.received() == signal.SIGINT)
        with stop_signals.deferred():
            stop_signals.stop_if_requested()  # a training loop stops at its own safe points
        with stop_signals.listening():  # nested: the same requests
            assert stop_signals.agreed() == signal.SIGINT
        with pytest.raises(stop_signals.Stopped, match=r"^Ctrl-C \(SIGINT\) received; stopped, "
                                                       "keeping nothing of the stage") as caught:
            stop_signals.stop_if_requested()
    assert caught.value.exit_code == 130 and caught.value.kind == "interrupted"
    assert {signum: signal.getsignal(signum) for signum in stop_signals.NAMES} == before
    assert stop_signals.received() is None
    stop_signals.stop_if_requested()  # outside `listening`: nothing to act on
    previous = signal.set_wakeup_fd(-1)  # the wakeup pipe was put back too
    signal.set_wakeup_fd(previous)
    assert previous == -1


def test_sigterm_stops_with_143_though_a_library_took_it_meanwhile():
    taken_by_library = []
    with stop_signals.listening():
        signal.signal(signal.SIGTERM, lambda *_: taken_by_library.append(True))  # as JAX's
        with stop_signals.listening():  # preemption service does; the runner's block, nested
            os.kill(os.getpid(), signal.SIGTERM)
            assert wait_for(lambda: stop_signals.received() == signal.SIGTERM)
            with pytest.raises(stop_signals.Stopped, match="^SIGTERM received; ") as caught:
                stop_signals.stop_if_requested()
    assert caught.value.exit_code == 143 and caught.value.kind == "preempted"
    assert not taken_by_library


# A main thread that never runs Python's signal handlers again, as one waiting inside XLA:
# it blocks SIGINT (which then lands on another thread) and waits for a read that never comes.
STUCK = """
import os, signal
from rso_jax.runtime import stop_signals
with stop_signals.listening():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    never_written, _ = os.pipe()
    print("blocked", flush=True)
    os.read(never_written, 1)
"""


def test_a_second_ctrl_c_ends_a_stuck_process_at_once():
    process = subprocess.Popen([sys.executable, "-c", STUCK], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "blocked\n"
        process.send_signal(signal.SIGINT)
        acknowledged = process.stderr.readline()  # at once, though the main thread is blocked
        assert "Ctrl-C (SIGINT) received: stopping at the next safe point" in acknowledged
        assert "Ctrl-C (SIGINT) again stops at once" in acknowledged
        assert process.poll() is None  # the first one only asked
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=30)
    finally:
        process.kill()
    rest = process.stderr.read()
    assert returncode == 130
    assert rest.startswith("rso_jax: Ctrl-C (SIGINT) received again: stopped at once.")
    assert "Traceback" not in rest and len(rest.splitlines()) == 1
