"""Running the experiment in the tests: its entry point in a subprocess, or its gin config
parsed in this process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator, Optional, Sequence

from t5_helpers import REPO_ROOT

SYNTHETIC_VOCABULARY = os.path.join(REPO_ROOT, "rso_jax", "assets", "synthetic_spm.model")
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def devices_env(count: int, **extra: str) -> dict:
    """The environment of a process of `count` simulated CPU devices, with the test session's
    other XLA flags (conftest)."""
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
             if not flag.startswith(_DEVICE_COUNT_FLAG)]
    return dict(os.environ, XLA_FLAGS=" ".join([*flags, f"{_DEVICE_COUNT_FLAG}={count}"]),
                JAX_PLATFORMS="cpu", **extra)


ONE_DEVICE_ENV = devices_env(1)
# The demo (configs/demo_rso.gin) at its tiniest: every stage in seconds on one CPU device.
DEMO_TINY_FLAGS = [
    "--gin_file=configs/demo_rso.gin", "--gin.EMPTY_OUTPUTS_LIMIT=1.0",  # greedy may end at once
    "--gin.SFT_STEPS=12", "--gin.RANKER_STEPS=12", "--gin.PREFERENCE_STEPS=40",
    "--gin.NUM_CANDIDATES=4", "--gin.NUM_SAMPLES=4", "--gin.MAX_DECODE_LENGTH=10",
    "--gin.NUM_SAMPLE_PROMPTS=32", "--gin.NUM_EVAL_PROMPTS=16",
    "--gin.NUM_TRAIN_EXAMPLES=256",
    "--gin.NUM_VALIDATION_EXAMPLES=16", "--gin.NUM_TEST_EXAMPLES=16",
    "--gin.SFT_BATCH_SIZE=16", "--gin.RANKER_BATCH_SIZE=16", "--gin.PREFERENCE_BATCH_SIZE=16",
    "--gin.PREFERENCE_CHECKPOINT_EVERY=10", "--gin.PREFERENCE_EVAL_EVERY=20",
    "--gin.RANKER_WARMUP_STEPS=2",
    "--gin.DATA_PARALLELISM=1", "--gin.MODEL_PARALLELISM=1"]


def main_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "rso_jax.main", *flags]


def run_main(*flags: str, env=None, timeout: int = 900,
             file_size_limit_kb: Optional[int] = None) -> subprocess.CompletedProcess:
    command = main_command(*flags)
    if file_size_limit_kb is not None:
        command = with_file_size_limit(command, file_size_limit_kb)
    return subprocess.run(command, cwd=REPO_ROOT, env=env or ONE_DEVICE_ENV,
                          capture_output=True, text=True, timeout=timeout)


def kill_and_resume_script():
    """scripts/kill_and_resume.py as a module (its helpers are tested without the script)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "kill_and_resume", os.path.join(REPO_ROOT, "scripts", "kill_and_resume.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_file_size_limit(command: Sequence[str], kilobytes: int) -> list[str]:
    """`command` run where no file may grow past `kilobytes` KiB: a full disk without mounting
    one (a write past the limit fails with EFBIG, as Python ignores SIGXFSZ)."""
    return ["bash", "-c", f'ulimit -f {kilobytes} && exec "$@"', "bash", *command]


def bindings(flags: Sequence[str]) -> tuple[list[str], list[str]]:
    """(gin files, bindings) of command-line flags, as the entry point reads them."""
    from rso_jax import main
    return main.parse_flags(list(flags))


@contextlib.contextmanager
def gin_config(flags: Sequence[str], allow_required: bool = False) -> Iterator[None]:
    """The gin configuration of `flags`, active inside the block and cleared after it (settings
    left REQUIRED that a run reads are refused, unless `allow_required`)."""
    import gin
    from rso_jax import main

    gin.clear_config()
    try:
        main.configure_gin(*bindings(flags), allow_required=allow_required)
        yield
    finally:
        gin.clear_config()


def build_experiment(flags: Sequence[str]):
    """The `Experiment` that `python -m rso_jax.main FLAGS` would run."""
    import gin
    from rso_jax.experiment import config

    with gin_config(flags):
        return gin.get_configurable(config.Experiment)()
