"""The operating system's error found behind a library's exception, and the stage an error
was raised in. (A full disk end to end: tests/test_experiment.py.)"""

import errno

import pytest

from rso_jax.runtime import failures

# What orbax raised when TensorStore could not write a checkpoint's array past a file size limit.
TENSORSTORE_MESSAGE = (
    'OUT_OF_RANGE: Error writing "params.decoder.decoder_norm.scale/0" in OCDBT database at '
    'local file "/w/sft/checkpoints/12.orbax-checkpoint-tmp/state/ocdbt.process_0/": Failed '
    'writing: "/w/sft/checkpoints/12.orbax-checkpoint-tmp/state/ocdbt.process_0/d/df48": '
    "Failed to write 235916 bytes to file 8: File too large [os_error_code='27']")


def raised(make):
    """The exception `make()` raises, with its causes and contexts as Python sets them."""
    try:
        make()
    except Exception as error:
        return error
    raise AssertionError("nothing raised")


def wrapped_in_orbax(error):
    def make():
        try:
            raise error
        except Exception:
            raise RuntimeError("Save Finalize thread (save_finalize) failed.")
    return raised(make)


def test_the_operating_systems_error_is_found_behind_a_librarys():
    full = OSError(errno.ENOSPC, "No space left on device")  # a write names no file
    found = failures.os_failure(wrapped_in_orbax(full))
    assert found == failures.OsFailure(errno.ENOSPC, None)
    assert str(found) == "No space left on device (ENOSPC)"
    denied = PermissionError(errno.EACCES, "Permission denied", "/w/x")
    in_group = ExceptionGroup("writes", [ValueError("other"), denied])
    assert failures.os_failure(wrapped_in_orbax(in_group)) == failures.OsFailure(errno.EACCES,
                                                                                 "/w/x")
    tensorstore = failures.os_failure(wrapped_in_orbax(ValueError(TENSORSTORE_MESSAGE)))
    assert tensorstore == failures.OsFailure(
        errno.EFBIG, "/w/sft/checkpoints/12.orbax-checkpoint-tmp/state/ocdbt.process_0/d/df48")


def test_the_projects_own_messages_are_kept_and_a_plain_oserror_is_named():
    def reworded():
        try:
            open("/no/such/file")
        except FileNotFoundError as error:
            raise ValueError("SFT_CHECKPOINT /no/such/file does not exist") from error
    assert failures.os_failure(raised(reworded)) is None  # says more than ENOENT
    assert failures.os_failure(ValueError("a setting")) is None
    missing = raised(lambda: open("/no/such/file"))
    assert failures.os_failure(missing) == failures.OsFailure(errno.ENOENT, "/no/such/file")


def test_the_line_names_the_stage_the_error_the_path_and_what_to_do():
    line = failures.describe_os_failure(failures.OsFailure(errno.ENOSPC, "/w/evaluate/x.json"),
                                        "evaluate")
    assert line.startswith("stage evaluate: No space left on device (ENOSPC) at "
                           "/w/evaluate/x.json; the file system is full: free space on it or "
                           "choose another WORK_DIR. Then run the same command again")
    assert "\n" not in line


def test_the_innermost_stage_is_recorded_on_the_error():
    with pytest.raises(OSError) as caught:
        with failures.in_stage("round_2/evaluate"), failures.in_stage("inner"):
            raise OSError(errno.EROFS, "Read-only file system")
    assert failures.stage_of(caught.value) == "inner"
    assert failures.stage_of(ValueError()) is None
