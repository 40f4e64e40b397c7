"""Running the experiment in the tests: its entry point in a subprocess, or its gin config
parsed in this process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator, Sequence

from t5_helpers import REPO_ROOT

SYNTHETIC_VOCABULARY = os.path.join(REPO_ROOT, "rso_jax", "assets", "synthetic_spm.model")
ONE_DEVICE_ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")


def main_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "rso_jax.main", *flags]


def run_main(*flags: str, env=None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(main_command(*flags), cwd=REPO_ROOT, env=env or ONE_DEVICE_ENV,
                          capture_output=True, text=True, timeout=timeout)


def bindings(flags: Sequence[str]) -> tuple[list[str], list[str]]:
    """(gin files, bindings) of command-line flags, as the entry point reads them."""
    from rso_jax import main
    return main.parse_flags(list(flags))


@contextlib.contextmanager
def gin_config(flags: Sequence[str]) -> Iterator[None]:
    """The gin configuration of `flags`, active inside the block and cleared after it."""
    import gin
    from rso_jax import main

    gin.clear_config()
    try:
        main.configure_gin(*bindings(flags))
        yield
    finally:
        gin.clear_config()


def build_experiment(flags: Sequence[str]):
    """The `Experiment` that `python -m rso_jax.main FLAGS` would run."""
    import gin
    from rso_jax.experiment import config

    with gin_config(flags):
        return gin.get_configurable(config.Experiment)()
