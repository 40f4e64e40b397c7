"""The run's log file: made only once WORK_DIR exists, with every line and the tracebacks the
console leaves out. (A run's log end to end: tests/test_experiment.py.)"""

import logging
import os
import sys

from rso_jax.runtime import run_log


def record(message, error=None):
    exc_info = None if error is None else (type(error), error, error.__traceback__)
    return logging.LogRecord("orbax", logging.ERROR, __file__, 1, message, None, exc_info)


def failure():
    try:
        raise RuntimeError("deep inside a library")
    except RuntimeError as error:
        return error


def test_the_file_waits_for_the_work_dir_then_holds_every_line_and_traceback(tmp_path):
    work_dir = tmp_path / "run"
    log = run_log.RunLog(str(work_dir))
    log.handle(record("before the run made WORK_DIR"))
    assert not work_dir.exists() and not log.written  # a run refused at start leaves nothing
    work_dir.mkdir()
    log.handle(record("a background save failed", failure()))
    log.record("stage sft: No space left on device (ENOSPC)", failure())
    assert log.written and os.path.dirname(log.path) == str(work_dir / "logs")
    log.close()
    text = open(log.path).read()
    assert text.index("before the run made WORK_DIR") < text.index("a background save failed")
    assert text.count("RuntimeError: deep inside a library") == 2
    assert "ERROR rso_jax.main: stage sft: No space left on device (ENOSPC)\nTraceback" in text


def test_a_console_line_is_one_line():
    line = run_log.OneLineFormatter(run_log.FORMAT).format(record("save failed", failure()))
    assert line.endswith("ERROR orbax: save failed") and "\n" not in line
    full = logging.Formatter(run_log.FORMAT).format(record("save failed", failure()))
    assert "Traceback" in full  # the record itself keeps its traceback for the file


def test_errors_python_ignores_go_to_the_file_alone(tmp_path, capsys):
    log = run_log.open_file(str(tmp_path))
    try:
        class Unraisable:
            def __del__(self):
                raise RuntimeError("Event loop is closed")
        Unraisable()
    finally:
        run_log.close_file(log)
    assert sys.unraisablehook is log.previous_unraisablehook
    assert "Event loop is closed" not in capsys.readouterr().err
    assert "RuntimeError: Event loop is closed" in open(log.path).read()
