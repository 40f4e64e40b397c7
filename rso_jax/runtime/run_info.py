"""Results that describe themselves: every artifact is written with the gin config behind it."""

from __future__ import annotations

import json
import os
import platform
from typing import Any

from rso_jax.runtime import atomic_io

OPERATIVE_CONFIG_FILE = "operative_config.gin"


def gin_config_text() -> str:
    """The operative gin config (or, before any configurable ran, the full config)."""
    import gin

    return gin.operative_config_str() or gin.config_str()


def write_gin_config(directory: str) -> None:
    """Writes `gin_config_text()` into `directory`."""
    atomic_io.write_text(os.path.join(directory, OPERATIVE_CONFIG_FILE), gin_config_text())


def write_result(directory: str, name: str, value: Any) -> str:
    """Writes `value` as JSON to directory/name, with the gin config beside it; returns the path."""
    path = os.path.join(directory, name)
    atomic_io.write_json(path, value)
    write_gin_config(directory)
    return path


def machine_description() -> dict[str, Any]:
    """Where a benchmark ran: accelerator kind and count, CPU count, library versions."""
    import jax

    device = jax.devices()[0]
    return {"platform": device.platform, "device": device.device_kind,
            "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "jax": jax.__version__, "python": platform.python_version()}


def report_benchmark(result: dict[str, Any], output: str, sort_keys: bool = True) -> str:
    """Prints a benchmark's one JSON line and writes the same line to `output` atomically."""
    line = json.dumps(result, sort_keys=sort_keys)
    print(line)
    atomic_io.write_text(output, line + "\n")
    return line
