"""Reliability: kill the experiment with SIGKILL at random points of each stage, run it again
after every kill, and check that it ends exactly as an uninterrupted run.

    python scripts/kill_and_resume.py --kills 20 --seed 0 \
        --output bench_results/kill_and_resume.json -- --gin_file=configs/demo_rso.gin --tiny

The flags after `--` are the experiment's (`python -m rso_jax.main ...`, without WORK_DIR;
default: the demo with --tiny). First an uninterrupted reference run in WORK/reference, whose
stage times place the kills: kill i lands in stage number floor(i * stages / kills), a
uniformly random time after the log says that stage started (up to its reference duration,
so a kill may also land in a later stage). Then the same experiment in WORK/killed, started
again after each kill, and once more to the end. Identical means: results.json equal, every
.npz output equal array for array, and the parameters of every trained stage equal bit for
bit. Prints one JSON line and writes it to --output.

A kill lands when the run was still going and ended by the signal (not on its own first);
`kills_landed` counts them. The script fails (exit 1) when the outputs differ, or when fewer
kills landed than --kills less --allowed_missed_kills (default 0): a run that was hardly
interrupted proves little. On a loaded machine, where stages take longer than in the reference
run, allow some (--allowed_missed_kills) or give more --kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_STARTED = "rso_jax.experiment.runner: Stage {stage}: "  # then "running." or why
TRAINED_STAGES = ("sft", "ranker", "preference")


def main_command(flags: Sequence[str], work_dir: str) -> list[str]:
    return [sys.executable, "-m", "rso_jax.main", *flags, f"--gin.WORK_DIR='{work_dir}'"]


def run_until_killed(command: Sequence[str], stage: str, delay: float,
                     ready: Optional[Callable[[], bool]] = None, env=None,
                     log: Optional[list] = None, timeout: float = 1800,
                     sig: int = signal.SIGKILL) -> dict:
    """Runs `command`; once its log says `stage` started (and `ready()` holds, if given),
    waits `delay` seconds and sends `sig` (SIGKILL). Returns what happened: 'killed' (whether
    the kill landed, `ended_by`), 'returncode', 'seconds'."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    started = threading.Event()
    lines = log if log is not None else []

    def read() -> None:
        marker = STAGE_STARTED.format(stage=stage)
        for line in process.stderr:
            lines.append(line)
            if marker in line and "skipped" not in line and "done in" not in line:
                started.set()
        started.set()  # the run ended: nothing left to wait for

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started.wait(timeout)
    while ready is not None and not ready() and process.poll() is None:
        time.sleep(0.05)
    deadline = time.perf_counter() + delay
    while process.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.02)
    sent = process.poll() is None
    if sent:
        process.send_signal(sig)
    process.wait()
    reader.join(timeout=10)
    killed = sent and ended_by(process.returncode, sig)
    return {"stage": stage, "delay": round(delay, 2), "killed": killed,
            "returncode": process.returncode, "seconds": round(time.perf_counter() - start, 2)}


def ended_by(returncode: int, sig: int) -> bool:
    """Whether a process that exited with `returncode` was ended by the signal `sig`: killed
    by it (-sig, as subprocess reports it) or exiting as a shell reports it (128 + sig, what
    rso_jax.main returns after saving its state on SIGTERM)."""
    return returncode in (-sig, 128 + sig)


def missed_kills(attempts: Sequence[dict], kills: int, allowed_missed: int) -> Optional[str]:
    """Why too few of the `kills` attempts landed (more than `allowed_missed` did not), or
    None."""
    landed = sum(attempt["killed"] for attempt in attempts)
    if kills - landed <= allowed_missed:
        return None
    missed = sorted({attempt["stage"] for attempt in attempts if not attempt["killed"]})
    return (f"only {landed} of {kills} kills landed (allowed to miss {allowed_missed}); the "
            f"runs aimed at stages {missed} ended before their kill, so the resumption was "
            "tested less than asked. Give more --kills, run on a less loaded machine, or "
            "allow some with --allowed_missed_kills.")


def run_to_end(command: Sequence[str], env=None, timeout: float = 3600):
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def differences(reference_dir: str, work_dir: str) -> list[str]:
    """How the outputs of two runs of one experiment differ (empty when identical)."""
    import numpy as np

    found = []
    with open(os.path.join(reference_dir, "results.json")) as a, \
            open(os.path.join(work_dir, "results.json")) as b:
        if json.load(a) != json.load(b):
            found.append("results.json")
    for root, _, files in os.walk(reference_dir):
        for name in files:
            if not name.endswith(".npz") or name.startswith("."):
                continue
            relative = os.path.relpath(os.path.join(root, name), reference_dir)
            other = os.path.join(work_dir, relative)
            if not os.path.isfile(other):
                found.append(f"{relative} missing")
                continue
            with np.load(os.path.join(root, name)) as x, np.load(other) as y:
                if sorted(x.files) != sorted(y.files) or any(
                        not np.array_equal(x[key], y[key]) for key in x.files):
                    found.append(relative)
    for stage in TRAINED_STAGES:
        if not _params_equal(os.path.join(reference_dir, stage, "params"),
                             os.path.join(work_dir, stage, "params")):
            found.append(f"{stage}/params")
    return found


def _params_equal(a: str, b: str) -> bool:
    import jax
    import numpy as np
    from rso_jax import t5
    from rso_jax.weights import orbax_params, tree

    trees = [tree.flatten(jax.device_get(orbax_params.restore_params(
        path, orbax_params.load_config(path, t5.T5Config)))) for path in (a, b)]
    return trees[0].keys() == trees[1].keys() and all(
        np.array_equal(trees[0][key], trees[1][key]) for key in trees[0])


def stage_seconds(work_dir: str, stages: Sequence[str]) -> dict[str, float]:
    seconds = {}
    for stage in stages:
        path = os.path.join(work_dir, stage, "DONE.json")
        if os.path.isfile(path):
            with open(path) as stream:
                seconds[stage] = float(json.load(stream).get("seconds", 0.0))
    return seconds


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--allowed_missed_kills", type=int, default=0,
                        help="kills that may fail to land (the run ended first) before the "
                             "script fails")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work_dir", default="runs/kill_and_resume",
                        help="holds reference/ and killed/ (both replaced)")
    parser.add_argument("--output", default="bench_results/kill_and_resume.json")
    parser.add_argument("flags", nargs="*", help="the experiment's flags, after --")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.allowed_missed_kills < 0:
        parser.error("--kills must be >= 1 and --allowed_missed_kills >= 0.")
    args.flags = args.flags or ["--gin_file=configs/demo_rso.gin", "--tiny"]
    return args


def main(argv=None) -> int:
    import shutil

    sys.path.insert(0, REPO_ROOT)
    from rso_jax.runtime import run_info
    from rso_jax.experiment.stages import STAGES

    args = parse_args(argv)
    reference_dir = os.path.abspath(os.path.join(args.work_dir, "reference"))
    killed_dir = os.path.abspath(os.path.join(args.work_dir, "killed"))
    for directory in (reference_dir, killed_dir):
        shutil.rmtree(directory, ignore_errors=True)
    start = time.perf_counter()
    reference = run_to_end(main_command(args.flags, reference_dir))
    if reference.returncode != 0:
        print(reference.stderr[-3000:], file=sys.stderr)
        return 1
    reference_seconds = time.perf_counter() - start
    durations = stage_seconds(reference_dir, STAGES)
    stages = [stage for stage in STAGES if stage in durations]
    rng = random.Random(args.seed)
    attempts = []
    start = time.perf_counter()
    for kill in range(args.kills):
        stage = stages[kill * len(stages) // args.kills]
        attempt = run_until_killed(main_command(args.flags, killed_dir), stage,
                                   rng.uniform(0.0, durations[stage]))
        attempts.append(attempt)
        print(json.dumps(attempt), file=sys.stderr)
    final = run_to_end(main_command(args.flags, killed_dir))
    killed_seconds = time.perf_counter() - start
    found = (differences(reference_dir, killed_dir) if final.returncode == 0
             else [f"the last run failed: {final.stderr[-2000:]}"])
    leftovers = [os.path.join(root, name) for root, folders, files in os.walk(killed_dir)
                 for name in [*files, *folders]
                 if ".partial-" in name or "orbax-checkpoint-tmp" in name]
    run_info.report_benchmark({
        "benchmark": "kill_and_resume", "flags": args.flags, "kills": args.kills,
        "kills_landed": sum(a["killed"] for a in attempts),
        "kills_landed_per_stage": {s: sum(a["killed"] and a["stage"] == s for a in attempts)
                                   for s in stages},
        "allowed_missed_kills": args.allowed_missed_kills,
        "identical": not found, "differences": found, "leftover_temporary_files": leftovers,
        "reference_seconds": round(reference_seconds, 1),
        "killed_and_resumed_seconds": round(killed_seconds, 1),
        "machine": run_info.machine_description()}, args.output)
    failures = [f"the outputs differ from the uninterrupted run's: {found}"] if found else []
    shortfall = missed_kills(attempts, args.kills, args.allowed_missed_kills)
    if shortfall:
        failures.append(shortfall)
    for failure in failures:
        print(f"kill_and_resume: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
