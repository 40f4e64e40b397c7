"""Checksums of checkpoint directories: written once the save has finished, and any change
since (bytes, size, a file missing or added, the record itself) is found."""

import json
import os
import threading
import time

import pytest

from rso_jax.training import checkpoint_checksums


def make_step_dir(root):
    step_dir = root / "4"
    (step_dir / "state" / "d").mkdir(parents=True)
    (step_dir / "state" / "d" / "chunk").write_bytes(bytes(range(256)) * 4)
    (step_dir / "_CHECKPOINT_METADATA").write_text('{"step": 4}')
    return step_dir


def test_a_step_as_saved_matches_its_checksums(tmp_path):
    step_dir = make_step_dir(tmp_path)
    checkpoint_checksums.write(str(step_dir))
    recorded = json.load(open(step_dir / checkpoint_checksums.CHECKSUMS_FILE))
    assert sorted(recorded) == ["_CHECKPOINT_METADATA", os.path.join("state", "d", "chunk")]
    assert checkpoint_checksums.mismatch(str(step_dir)) is None


@pytest.mark.parametrize("damage, found", [
    (lambda d: (d / "state" / "d" / "chunk").write_bytes(b"\x01" * 1024),
     "state/d/chunk is not what the save wrote (its SHA-256 differs)"),
    (lambda d: (d / "state" / "d" / "chunk").write_bytes(b"\x01" * 10),
     "state/d/chunk has 10 bytes; the save wrote 1024"),
    (lambda d: os.remove(d / "state" / "d" / "chunk"), "state/d/chunk is missing"),
    (lambda d: (d / "state" / "extra").write_text("x"),
     "state/extra is not among the files the save wrote"),
    (lambda d: (d / checkpoint_checksums.CHECKSUMS_FILE).write_text('{"chunk": 3}'),
     "checksums.json is damaged"),
    (lambda d: os.remove(d / checkpoint_checksums.CHECKSUMS_FILE),
     "it has no checksums.json, so its files cannot be checked"),
])
def test_any_change_since_the_save_is_found_naming_the_file(tmp_path, damage, found):
    step_dir = make_step_dir(tmp_path)
    checkpoint_checksums.write(str(step_dir))
    damage(step_dir)
    assert checkpoint_checksums.mismatch(str(step_dir)).endswith(found)


def test_newest_verified_skips_newer_steps_that_do_not_match(tmp_path):
    for step in (2, 4, 6):
        (tmp_path / str(step)).mkdir()
        (tmp_path / str(step) / "f").write_text(str(step))
        checkpoint_checksums.write(str(tmp_path / str(step)))
    (tmp_path / "6" / "f").write_text("x")
    os.remove(tmp_path / "4" / "f")
    assert checkpoint_checksums.newest_verified(str(tmp_path), [2, 4, 6]) == (2, [
        f"step 6: {tmp_path}/6/f is not what the save wrote (its SHA-256 differs)",
        f"step 4: {tmp_path}/4/f is missing"])


class SlowBackgroundSaves:
    """Stands for orbax's manager: a save writes its files on a thread, a moment later (or,
    when `leaves_nothing`, fails without a word and leaves no step directory)."""

    def __init__(self, directory, leaves_nothing=False):
        self.directory = directory
        self.leaves_nothing = leaves_nothing
        self.thread = None

    def save(self, step, args):
        def write():
            time.sleep(0.3)
            if not self.leaves_nothing:
                (self.directory / str(step)).mkdir()
                (self.directory / str(step) / "data").write_text(args)
        self.thread = threading.Thread(target=write)
        self.thread.start()
        return True

    def wait_until_finished(self):
        if self.thread is not None:
            self.thread.join()

    def close(self):
        self.wait_until_finished()


def test_checksums_are_written_once_the_background_save_has_finished(tmp_path):
    manager = checkpoint_checksums.ChecksummedCheckpointManager(SlowBackgroundSaves(tmp_path),
                                                                str(tmp_path))
    assert manager.save(3, args="three")
    assert not os.path.exists(tmp_path / "3")  # the save goes on in the background
    manager.wait_until_finished()
    assert json.load(open(tmp_path / "3" / checkpoint_checksums.CHECKSUMS_FILE)).keys() == {
        "data"}  # the file the save wrote after `save` returned is recorded
    assert checkpoint_checksums.mismatch(str(tmp_path / "3")) is None


def test_a_failure_to_write_the_checksums_is_raised_by_the_next_wait(tmp_path):
    manager = checkpoint_checksums.ChecksummedCheckpointManager(
        SlowBackgroundSaves(tmp_path, leaves_nothing=True), str(tmp_path))
    manager.save(3, args="three")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/3 is not there to be checksummed"):
        manager.wait_until_finished()
    assert not os.path.exists(tmp_path / "3")  # no step directory made up for the checksums
    manager.close()  # raised once


def test_one_kept_steps_parameters_are_read_only_as_saved(tmp_path):
    """checkpoint_resume.step_params (python -m rso_jax.tools.gold_by_step): the parameters of one
    kept step, refused when the step was not kept (naming the kept ones) or its files changed."""
    import numpy as np
    import orbax.checkpoint as ocp

    from rso_jax.training import checkpoint_resume

    checkpoint_dir = tmp_path / checkpoint_resume.CHECKPOINTS_DIR
    step_dir = checkpoint_dir / "4"
    params = {"dense": {"kernel": np.arange(12, dtype=np.float32).reshape(3, 4)}}
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(str(step_dir / checkpoint_resume.STATE_ITEM),
                      {"params": params, "step": np.int32(4)})
    checkpointer.wait_until_finished()
    checkpoint_checksums.write(str(step_dir))
    (checkpoint_dir / checkpoint_checksums.CHECKSUMS_KEPT).write_text("")
    restored = checkpoint_resume.step_params(str(checkpoint_dir), 4)
    np.testing.assert_array_equal(restored["dense"]["kernel"], params["dense"]["kernel"])
    with pytest.raises(ValueError, match=r"no checkpoint of step 6 .*kept: \[4\]"):
        checkpoint_resume.step_params(str(checkpoint_dir), 6)
    (step_dir / checkpoint_resume.STATE_ITEM / "extra").write_text("x")
    with pytest.raises(ValueError, match="step 4 .* is not as saved: .*extra is not among"):
        checkpoint_resume.step_params(str(checkpoint_dir), 4)
