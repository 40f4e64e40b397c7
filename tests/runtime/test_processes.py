"""The experiment under `jax.distributed`: two processes of four CPU devices each on localhost
(JAX's CPU collectives) against one process of eight devices, on the same ('data' 4, 'model' 2)
mesh; a SIGTERM that reaches one of the two processes stops both at the same step, and both two
processes and one process resume their checkpoint (the two processes after agreeing to set
aside a newest checkpoint that fails its checksums)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

import experiment_helpers
from rso_jax.runtime import atomic_io
from t5_helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # end-to-end runs of the experiment

MESH_FLAGS = ["--gin.DATA_PARALLELISM=4", "--gin.MODEL_PARALLELISM=2"]
STEPS, CHECKPOINT_EVERY, PREEMPT_AT = 20, 5, 6
FLAGS = [*experiment_helpers.DEMO_TINY_FLAGS, *MESH_FLAGS, f"--gin.PREFERENCE_STEPS={STEPS}",
         f"--gin.PREFERENCE_CHECKPOINT_EVERY={CHECKPOINT_EVERY}", "--gin.PREFERENCE_EVAL_EVERY=10"]
STEP_LINE = re.compile(rf"rso_jax\.training\.train_loop: preference step (\d+)/{STEPS} loss")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_processes(work_dir, count: int = 2, devices: int = 4, on_line=None,
                  timeout: float = 600, command=None) -> list[tuple[int, str, str]]:
    """Runs `command` (the experiment in `work_dir` by default) as `count` processes of one
    `jax.distributed` run (coordinator on localhost); `on_line(index, line, process)` sees each
    stderr line as it comes. Returns each process's (exit code, stdout, stderr); fails with
    every process's log tail if they do not end within `timeout` seconds (all are then
    killed)."""
    port = free_port()
    command = command or experiment_helpers.main_command(*FLAGS, f"--gin.WORK_DIR='{work_dir}'")
    processes = [subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env=experiment_helpers.devices_env(devices,
                                                  JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                                  JAX_NUM_PROCESSES=str(count),
                                                  JAX_PROCESS_ID=str(index)))
                 for index in range(count)]
    logs = [([], []) for _ in processes]

    def read(index, stream, lines, watch):
        for line in stream:
            lines.append(line)
            if watch and on_line is not None:
                on_line(index, line, processes[index])
    readers = [threading.Thread(target=read, args=(i, stream, logs[i][k], k == 1), daemon=True)
               for i, p in enumerate(processes) for k, stream in enumerate((p.stdout, p.stderr))]
    for reader in readers:
        reader.start()
    try:
        for process in processes:
            process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        for reader in readers:
            reader.join(timeout=10)
        tails = "\n".join(f"--- process {i} ---\n" + "".join(err[-40:])
                          for i, (_, err) in enumerate(logs))
        pytest.fail(f"The processes did not end within {timeout} s:\n{tails}")
    for reader in readers:
        reader.join(timeout=30)
    return [(p.returncode, "".join(out), "".join(err)) for p, (out, err) in zip(processes, logs)]


def sigterm_at_preference_step(target: int, step: int):
    """An `on_line` that sends SIGTERM to process `target` alone once its log reports
    preference step `step` or later."""
    def on_line(index, line, process):
        match = STEP_LINE.search(line)
        if index == target and match and int(match.group(1)) >= step and process.poll() is None:
            process.send_signal(signal.SIGTERM)
    return on_line


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("one_process") / "run"
    result = experiment_helpers.run_main(*FLAGS, f"--gin.WORK_DIR='{work_dir}'",
                                         env=experiment_helpers.devices_env(8))
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir


@pytest.fixture(scope="module")
def preempted_run(tmp_path_factory):
    """Two processes, SIGTERM to the second during preference training."""
    work_dir = tmp_path_factory.mktemp("preempted") / "run"
    return work_dir, run_processes(work_dir, on_line=sigterm_at_preference_step(target=1,
                                                                                step=PREEMPT_AT))


def test_sigterm_to_one_process_stops_both_at_the_same_saved_step(preempted_run):
    work_dir, first = preempted_run
    logs = [err for _, _, err in first]
    stopped = []
    for index, (code, _, log) in enumerate(first):
        assert code == 143, f"process {index} ended with {code}:\n{log[-3000:]}"
        match = re.search(r"preempted: preference: (SIGTERM received[^;]*); saved a checkpoint "
                          rf"at step (\d+) of {STEPS}", log)
        assert match, f"process {index}:\n{log[-3000:]}"
        stopped.append((match.group(1), int(match.group(2))))
    assert stopped[1][0] == "SIGTERM received"
    assert stopped[0][0] == "SIGTERM received by another process"
    step = stopped[0][1]
    assert stopped[1][1] == step and PREEMPT_AT <= step < STEPS
    assert "[process 0/2]" in logs[0] and "[process 1/2]" in logs[1]
    assert os.path.isdir(work_dir / "preference" / "checkpoints" / str(step))


def assert_same_results(work_dir, one_process_run):
    assert (json.loads((work_dir / "results.json").read_text())
            == json.loads((one_process_run / "results.json").read_text()))
    for path in sorted(one_process_run.glob("*/*.npz")):
        ours = np.load(work_dir / path.relative_to(one_process_run))
        theirs = np.load(path)
        assert ours.files == theirs.files
        for key in theirs.files:
            if np.issubdtype(theirs[key].dtype, np.floating):  # all-reduces add in other orders
                np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-4, atol=1e-4,
                                           err_msg=f"{path.name}:{key}")
            else:
                np.testing.assert_array_equal(ours[key], theirs[key], f"{path.name}:{key}")
    for stage in ("sft", "ranker", "preference"):
        losses = [[(r["step"], r["train/loss"]) for r in map(json.loads, open(d / stage /
                  "metrics.jsonl")) if "train/loss" in r] for d in (work_dir, one_process_run)]
        assert [s for s, _ in losses[0]] == [s for s, _ in losses[1]], stage
        np.testing.assert_allclose([l for _, l in losses[0]], [l for _, l in losses[1]],
                                   rtol=1e-4, err_msg=stage)
    leftovers = [p for p in work_dir.rglob("*") if atomic_io.is_leftover(p.name)]
    assert not leftovers  # no temporary file or directory of a write is left


def resume_copy(preempted_run, tmp_path):
    """A copy of the preempted run's directory (each resuming test changes its own)."""
    work_dir = tmp_path / "run"
    shutil.copytree(preempted_run[0], work_dir, symlinks=True)
    return work_dir


def checkpoint_steps(work_dir):
    return sorted(int(step) for step in os.listdir(work_dir / "preference" / "checkpoints")
                  if step.isdigit())


@pytest.fixture(scope="module")
def resumed_in_two(preempted_run, tmp_path_factory):
    """The preempted run resumed in two processes: a whole experiment in two processes (every
    stage before preference ran uninterrupted in them, preference resumed), so one run serves
    both the end-to-end and the resume checks. Its newest checkpoint (the one saved at the
    SIGTERM) lost its checksums first: only the first process compares a checkpoint with its
    checksums and the other takes its verdict, so both set it aside and resume from the one
    before."""
    work_dir = resume_copy(preempted_run, tmp_path_factory.mktemp("resumed_in_two"))
    assert PREEMPT_AT > CHECKPOINT_EVERY  # a checkpoint before the one saved at the SIGTERM
    *_, before, newest = checkpoint_steps(work_dir)
    os.remove(work_dir / "preference" / "checkpoints" / str(newest) / "checksums.json")
    return work_dir, run_processes(work_dir, timeout=400), (before, newest)


def test_two_processes_end_as_one_process_of_eight_devices(resumed_in_two, one_process_run):
    work_dir, results, _ = resumed_in_two
    both = "\n".join(f"--- process {i} ---\n{err[-3000:]}" for i, (_, _, err) in enumerate(results))
    assert [code for code, _, _ in results] == [0, 0], both
    assert "| trained |" in results[0][1] and "| trained |" not in results[1][1]  # one prints
    assert_same_results(work_dir, one_process_run)


def assert_resumed(work_dir, log, one_process_run, from_step):
    assert f"Resumed from step {from_step} (" in log
    assert "Stage sft: done before, skipped." in log
    assert_same_results(work_dir, one_process_run)
    assert json.loads((work_dir / "preference" / "DONE.json").read_text())[
        "resumed_from_step"] == from_step


def test_a_run_preempted_in_two_processes_resumes_in_two(resumed_in_two, one_process_run):
    work_dir, results, (before, _) = resumed_in_two
    both = "\n".join(f"--- process {i} ---\n{err[-3000:]}" for i, (_, _, err) in enumerate(results))
    assert [code for code, _, _ in results] == [0, 0], both
    assert_resumed(work_dir, results[1][2], one_process_run, from_step=before)


def test_two_processes_agree_to_set_aside_a_checkpoint_that_fails_its_checksums(resumed_in_two):
    work_dir, results, (before, newest) = resumed_in_two
    assert [code for code, _, _ in results] == [0, 0]
    for _, _, log in results:  # both resume from the same step, the one before
        assert f"Resumed from step {before} (" in log
    newest_dir = work_dir / "preference" / "checkpoints" / str(newest)
    assert f"{newest_dir} cannot be restored (it has no checksums.json" in results[0][2]
    assert (f"{newest_dir} cannot be restored (the first process found the files of "
            f"{newest_dir} changed; see its log)") in results[1][2]
    assert os.listdir(work_dir / "preference" / "checkpoints_unusable") == [str(newest)]


def test_a_run_preempted_in_two_processes_resumes_in_one(preempted_run, one_process_run,
                                                         tmp_path):
    work_dir = resume_copy(preempted_run, tmp_path)
    result = experiment_helpers.run_main(*FLAGS, f"--gin.WORK_DIR='{work_dir}'",
                                         env=experiment_helpers.devices_env(8))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[process" not in result.stderr
    assert_resumed(work_dir, result.stderr, one_process_run,
                   from_step=checkpoint_steps(preempted_run[0])[-1])


ALL_FINITE_SCRIPT = """
import numpy as np
from rso_jax import partitioning
partitioning.maybe_initialize_distributed()
import jax
from jax.sharding import NamedSharding, PartitionSpec
from rso_jax.training import checkpoint_resume
mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
sharding = NamedSharding(mesh, PartitionSpec(None, "model"))
leaf = np.ones((8, 16), np.float32)
tree = [jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])
        for _ in range(199)]
tree.append(jax.make_array_from_callback(leaf.shape, sharding,
                                         lambda index: np.full(leaf.shape, np.nan)[index]))
print([checkpoint_resume._all_finite(tree[:-1]) for _ in range(3)],
      checkpoint_resume._all_finite(tree))
"""


def test_the_finiteness_check_of_a_restore_does_not_deadlock_two_processes():
    """Regression: one eager reduction per parameter (hundreds of small computations in
    flight, each with a collective over the model axis) deadlocked XLA's CPU runtime under
    gloo; a resumed two-process run hung there."""
    results = run_processes(None, timeout=120, command=[sys.executable, "-c", ALL_FINITE_SCRIPT])
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == "[True, True, True] False"
