"""How a checkpoint that cannot be read is reported: the file, the format, and what to do."""

from __future__ import annotations

import contextlib
import struct
from typing import Iterator

from rso_jax.weights import tree

# Errors that reading a damaged file raises (safetensors' own error derives from Exception).
READ_ERRORS = (ValueError, OSError, KeyError, TypeError, EOFError, struct.error)


def unreadable(path: str, fmt: str, error: BaseException, remedy: str) -> ValueError:
    """The error for a checkpoint file of format `fmt` that `error` kept from being read.

    Args:
      path: the file or directory that could not be read.
      fmt: its format ('t5x', 'hf' or 'orbax').
      error: what reading it raised.
      remedy: how to get a readable copy again (each format module's `REMEDY`).
    """
    cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return ValueError(f"{path} could not be read as a checkpoint in the {fmt} format "
                      f"({cause}). {remedy}")


@contextlib.contextmanager
def named(name: str) -> Iterator[None]:
    """Prefixes the checkpoint's role (`name`, e.g. 'SFT_CHECKPOINT') to file and format errors
    raised inside."""
    try:
        yield
    except tree.ParamTreeMismatchError:
        raise
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{name}: {error}") from error
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error
