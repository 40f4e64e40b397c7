"""Where a run's log lines go: the console, one line each, and the run's log file,
WORK_DIR/logs/<start time>-<host>-<pid>.log, with everything the console shows plus the
tracebacks it leaves out: a library's error logged with its stack (orbax's, from its
background threads), the error that ended the run, and the errors Python ignores and would
print (`sys.unraisablehook`), which go to the file alone: after a failed write, TensorStore's
callbacks into the asyncio loop that orbax had closed raise dozens.

The file is made once WORK_DIR exists (the run makes it after its start-up checks: a run
refused before leaves no trace); the lines logged until then are written first. When the file
can no longer be written (on the disk the run filled), it stops there, silently.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import sys
import time
from typing import Optional

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOGS_DIR = "logs"
_MAX_PENDING_LINES = 10_000  # kept while WORK_DIR does not exist (it may never, on this host)


class OneLineFormatter(logging.Formatter):
    """Formats a record without its traceback or stack (the log file has them)."""

    def format(self, record: logging.LogRecord) -> str:
        kept = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = kept


def configure_console() -> None:
    """Log lines on stderr, one line each: warnings of every library, information of rso_jax."""
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler,
                                                                          logging.FileHandler):
            handler.setFormatter(OneLineFormatter(FORMAT))
    logging.getLogger("rso_jax").setLevel(logging.INFO)


class RunLog(logging.Handler):
    """The log file of a run in `work_dir` (see the module docstring)."""

    def __init__(self, work_dir: str):
        super().__init__()
        self.work_dir = os.path.abspath(work_dir)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}-{os.getpid()}.log"
        self.path = os.path.join(self.work_dir, LOGS_DIR, name)
        self.setFormatter(logging.Formatter(FORMAT))
        self._pending: collections.deque[str] = collections.deque(maxlen=_MAX_PENDING_LINES)
        self._stream = None
        self._opened = False
        self._failed = False
        self.previous_unraisablehook = sys.unraisablehook

    @property
    def written(self) -> bool:
        """Whether the file holds every line logged so far."""
        return self._opened and not self._failed

    def emit(self, record: logging.LogRecord) -> None:
        if self._failed:
            return
        text = self.format(record)
        try:
            if self._stream is None:
                if not os.path.isdir(self.work_dir):
                    self._pending.append(text)
                    return
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._stream = open(self.path, "a", encoding="utf-8")
                self._opened = True
                self._stream.writelines(line + "\n" for line in self._pending)
                self._pending.clear()
            self._stream.write(text + "\n")
            self._stream.flush()
        except OSError:
            self._failed = True
        except Exception:  # as logging's own handlers do
            self.handleError(record)

    def record(self, message: str, error: Optional[BaseException] = None) -> None:
        """Writes `message` to the file only: an error with the traceback of `error` when
        given, else a warning."""
        exc_info = None if error is None else (type(error), error, error.__traceback__)
        level = logging.WARNING if error is None else logging.ERROR
        self.handle(logging.LogRecord("rso_jax.main", level, __file__, 0, message, None,
                                      exc_info))

    def unraisablehook(self, unraisable) -> None:
        """sys.unraisablehook while the run goes: an error Python ignores goes to the file."""
        where = f" in {unraisable.object!r}" if unraisable.object is not None else ""
        self.handle(logging.LogRecord(
            "rso_jax.runtime.run_log", logging.WARNING, __file__, 0,
            f"{unraisable.err_msg or 'Exception ignored'}{where}:", None,
            (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)))

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except OSError:
                self._failed = True
            self._stream = None
        super().close()


def open_file(work_dir: str) -> RunLog:
    """Adds the log file of a run in `work_dir` to the root logger's handlers, and makes it
    sys.unraisablehook until `close_file`."""
    log = RunLog(work_dir)
    logging.getLogger().addHandler(log)
    sys.unraisablehook = log.unraisablehook
    return log


def close_file(log: RunLog) -> None:
    sys.unraisablehook = log.previous_unraisablehook
    logging.getLogger().removeHandler(log)
    log.close()
