"""Training loop: exact resume after an interruption, NaN stops cleanly, best checkpoint kept."""

import dataclasses
import functools
import json
import os
import signal
import shutil
import time

import jax
import numpy as np
import pytest

from rso_jax import t5, partitioning
from rso_jax.data import batching
from rso_jax.training import checkpoint_checksums, optimizers, train_loop, train_steps
from rso_jax.runtime import file_checksums
from rso_jax.weights import orbax_params
from damage_helpers import flip_bytes
from t5_helpers import MESH_TEST_CONFIG, padded_tokens


class Interrupted(Exception):
    pass


KEPT = checkpoint_checksums.CHECKSUMS_KEPT  # in every checkpoints/ saved with checksums


def make_batches(num_batches=50, nan_at=None, interrupt_at=None):
    """Deterministic SFT batches by position; optional NaN weights or an interruption."""
    def source(position):
        while True:
            if position == interrupt_at:
                raise Interrupted(f"killed at data position {position}")
            rng = np.random.default_rng(position)
            inputs = padded_tokens(rng, rng.integers(2, 10, 4), 10, MESH_TEST_CONFIG.vocab_size)
            targets = padded_tokens(rng, rng.integers(2, 6, 4), 6, MESH_TEST_CONFIG.vocab_size)
            weights = (targets > 0).astype(np.float32)
            if position == nan_at:
                weights[0, 0] = np.nan
            yield batching.SftBatch(inputs=inputs, targets=targets, loss_weights=weights)
            position += 1
    return source


@pytest.fixture(scope="module")
def setup():
    partitioner = partitioning.create_partitioner(data_parallelism=4, model_parallelism=2)
    optimizer = optimizers.adafactor(learning_rate=1e-2)
    params = jax.device_get(t5.init_params(MESH_TEST_CONFIG, jax.random.PRNGKey(0)))
    loss_fn = functools.partial(train_steps.sft_loss, model_config=MESH_TEST_CONFIG)
    example = next(make_batches()(0))
    step = train_steps.make_train_step(partitioner, MESH_TEST_CONFIG, optimizer, loss_fn, example)

    def fresh_state():
        return train_steps.place_state(partitioner, MESH_TEST_CONFIG, optimizer, params,
                                    jax.random.PRNGKey(7))

    def sharded(source):
        def batches(position):
            for batch in source(position):
                yield partitioner.shard_batch(batch)
        return batches

    return fresh_state, step, sharded


def loop(num_steps, **kwargs):
    return train_loop.LoopConfig(num_steps=num_steps, checkpoint_every=2, keep_checkpoints=2,
                                 log_every=1, progress_bar=False, **kwargs)


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
    """The final state of 7 steps without interruption."""
    fresh_state, step, sharded = setup
    state, _ = train_loop.train(fresh_state(), step, sharded(make_batches()),
                                str(tmp_path_factory.mktemp("straight")), loop(7),
                                model_config=MESH_TEST_CONFIG)
    return state


def interrupted_at_step_5(setup, work_dir, train_step=None):
    """7 steps started in `work_dir` and interrupted at step 5 (checkpoints at 2 and 4)."""
    fresh_state, step, sharded = setup
    with pytest.raises(Interrupted):
        train_loop.train(fresh_state(), train_step or step,
                         sharded(make_batches(interrupt_at=5)), work_dir, loop(7),
                         model_config=MESH_TEST_CONFIG)


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_uninterrupted(setup, straight, tmp_path):
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "interrupted")
    interrupted_at_step_5(setup, work_dir)
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints"))) == [
        "2", "4", KEPT, "operative_config.gin"]
    resumed, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                        loop(7), model_config=MESH_TEST_CONFIG)
    assert summary["resumed_from"] == 4 and summary["step"] == 7
    assert int(resumed.step) == 7
    np.testing.assert_array_equal(np.asarray(resumed.rng), np.asarray(straight.rng))
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(straight.params)),
                    jax.tree_util.tree_leaves(jax.device_get(resumed.params))):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(straight.opt_state)),
                    jax.tree_util.tree_leaves(jax.device_get(resumed.opt_state))):
        np.testing.assert_array_equal(a, b)
    lines = [json.loads(line) for line in open(os.path.join(work_dir, "metrics.jsonl"))]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6, 7]
    assert all(np.isfinite(line["train/loss"]) for line in lines)


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_the_rerun_ends_as_uninterrupted(setup, straight,
                                                                           tmp_path):
    """SIGTERM while step 3 trains (checkpoints every 2 steps): step 3 ends, is saved, waited
    for, and Preempted is raised; the handler before the run is put back; the rerun resumes
    from step 3 and ends with the uninterrupted run's state."""
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "preempted")

    def sigterm_at(signal_position, source):
        def batches(position):
            for index, batch in enumerate(source(position), start=position):
                if index == signal_position:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch
        return batches

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(train_loop.Preempted, match="SIGTERM received; saved a checkpoint at "
                                                   "step 3 of 7"):
        train_loop.train(fresh_state(), step, sigterm_at(2, sharded(make_batches())), work_dir,
                         loop(7), model_config=MESH_TEST_CONFIG)
    assert signal.getsignal(signal.SIGTERM) is before
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints"))) == [
        "2", "3", KEPT, "operative_config.gin"]
    resumed, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                        loop(7), model_config=MESH_TEST_CONFIG)
    assert summary["resumed_from"] == 3 and summary["step"] == 7
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(straight)),
                    jax.tree_util.tree_leaves(jax.device_get(resumed))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_run_saved_on_8_devices_resumes_on_4(setup, straight, tmp_path):
    """Checkpoints of a (data 4, model 2) mesh restored onto a (data 2, model 2) mesh of 4 other
    devices: the state takes the new shardings and training continues to the uninterrupted
    run's state (up to the summation order of the other mesh)."""
    work_dir = str(tmp_path / "remeshed")
    interrupted_at_step_5(setup, work_dir)
    partitioner = partitioning.Partitioner(
        mesh=partitioning.create_mesh(2, 2, devices=jax.devices()[4:]))
    optimizer = optimizers.adafactor(learning_rate=1e-2)
    loss_fn = functools.partial(train_steps.sft_loss, model_config=MESH_TEST_CONFIG)
    step = train_steps.make_train_step(partitioner, MESH_TEST_CONFIG, optimizer, loss_fn,
                                    next(make_batches()(0)))
    params = jax.device_get(t5.init_params(MESH_TEST_CONFIG, jax.random.PRNGKey(0)))
    state = train_steps.place_state(partitioner, MESH_TEST_CONFIG, optimizer, params,
                                 jax.random.PRNGKey(7))

    def batches(position):
        for batch in make_batches()(position):
            yield partitioner.shard_batch(batch)

    resumed, summary = train_loop.train(state, step, batches, work_dir, loop(7),
                                        model_config=MESH_TEST_CONFIG)
    assert summary["resumed_from"] == 4 and int(resumed.step) == 7
    for leaf in jax.tree_util.tree_leaves(resumed.params):
        assert leaf.sharding.mesh.devices.size == 4
        assert set(leaf.sharding.device_set) <= set(jax.devices()[4:])
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(straight.params)),
                    jax.tree_util.tree_leaves(jax.device_get(resumed.params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(setup, tmp_path):
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "nan")
    with pytest.raises(train_loop.NonFiniteLossError, match="at step 4 .* last good checkpoint "
                                                            "is step 2"):
        train_loop.train(fresh_state(), step, sharded(make_batches(nan_at=3)), work_dir, loop(8),
                         model_config=MESH_TEST_CONFIG)
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints"))) == [
        "2", KEPT, "operative_config.gin"]
    restored, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                         loop(2), model_config=MESH_TEST_CONFIG)
    assert summary["resumed_from"] == 2
    assert all(np.isfinite(leaf).all()
               for leaf in jax.tree_util.tree_leaves(jax.device_get(restored.params)))


@pytest.mark.slow
def test_best_checkpoint_follows_the_evaluation_metric(setup, tmp_path):
    fresh_state, step, sharded = setup
    scores = iter([0.2, 0.7, 0.5])
    seen = []

    def evaluate(params):
        seen.append(jax.device_get(params["decoder"]["logits_dense"]["kernel"]))
        return {"win_rate": next(scores)}

    work_dir = str(tmp_path / "best")
    train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                     loop(6, eval_every=2, best_metric="win_rate"), model_config=MESH_TEST_CONFIG,
                     evaluate=evaluate)
    best = json.load(open(os.path.join(work_dir, "best", "best.json")))
    assert best == {"step": 4, "metric": "win_rate", "value": 0.7}
    best_dir = os.path.join(work_dir, "best")
    assert orbax_params.load_config(best_dir, t5.T5Config) == MESH_TEST_CONFIG
    params = orbax_params.restore_params(best_dir, MESH_TEST_CONFIG)
    np.testing.assert_array_equal(np.asarray(params["decoder"]["logits_dense"]["kernel"]), seen[1])
    evals = [json.loads(line) for line in open(os.path.join(work_dir, "metrics.jsonl"))
             if "eval/win_rate" in line]
    assert [e["step"] for e in evals] == [2, 4, 6]
    assert os.listdir(os.path.join(work_dir, "tensorboard"))


@pytest.mark.slow
def test_unusable_newest_checkpoints_fall_back_to_the_newest_valid_one(setup, straight, tmp_path,
                                                                      caplog):
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "damaged")
    interrupted_at_step_5(setup, work_dir)
    checkpoint_dir = os.path.join(work_dir, "checkpoints")
    os.mkdir(os.path.join(checkpoint_dir, "6"))  # an empty step directory
    progress = os.path.join(checkpoint_dir, "4", "progress")
    for name in os.listdir(progress):  # step 4's JSON item made garbage
        with open(os.path.join(progress, name), "wb") as stream:
            stream.write(b"\xff\xfe not json")
    resumed, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                        loop(7), model_config=MESH_TEST_CONFIG)
    assert summary["resumed_from"] == 2 and int(resumed.step) == 7
    assert f"Checkpoint {checkpoint_dir}/6 cannot be restored" in caplog.text
    assert f"Checkpoint {checkpoint_dir}/4 cannot be restored" in caplog.text
    assert "resuming from step 2, the newest valid one" in caplog.text
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints_unusable"))) == ["4", "6"]
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(straight.params)),
                    jax.tree_util.tree_leaves(jax.device_get(resumed.params))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_resumed_run_counts_the_training_time_before_the_interruption(setup, tmp_path):
    import time
    fresh_state, step, sharded = setup

    def slow_step(state, batch):
        time.sleep(0.3)
        return step(state, batch)

    work_dir = str(tmp_path / "timed")
    interrupted_at_step_5(setup, work_dir, slow_step)
    _, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                  loop(7), model_config=MESH_TEST_CONFIG)
    assert summary["resumed_from"] == 4
    assert 4 * 0.3 <= summary["seconds_before_resume"] < 60  # steps 1-4 before the checkpoint
    assert summary["last_metrics"]["loss"] > 0


@pytest.mark.slow
def test_with_no_usable_checkpoint_training_starts_over_and_sets_the_old_best_aside(
        setup, straight, tmp_path, caplog):
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "none_left")
    interrupted_at_step_5(setup, work_dir)
    checkpoint_dir = os.path.join(work_dir, "checkpoints")
    for name in ("2", "4"):  # every checkpoint emptied
        for entry in os.listdir(os.path.join(checkpoint_dir, name)):
            path = os.path.join(checkpoint_dir, name, entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.makedirs(os.path.join(work_dir, "best"))
    with open(os.path.join(work_dir, "best", "best.json"), "w") as stream:
        json.dump({"step": 4, "metric": "win_rate", "value": 1.0}, stream)
    resumed, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                        loop(7), model_config=MESH_TEST_CONFIG)
    assert summary["resumed_from"] is None and summary["best"] is None
    assert "no valid checkpoint is left, so training starts from step 0" in caplog.text
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints_unusable"))) == [
        "2", "4", "best"]
    steps = [json.loads(line)["step"] for line in open(os.path.join(work_dir, "metrics.jsonl"))]
    assert steps == [1, 2, 3, 4, 5, 6, 7]  # the abandoned attempt's lines are gone
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(straight.params)),
                    jax.tree_util.tree_leaves(jax.device_get(resumed.params))):
        np.testing.assert_array_equal(a, b)


def file_orbax_misses_when_flipped(step_dir, scratch):
    """A file of an orbax step directory whose bytes 100-400, flipped, orbax does not notice:
    the state restores, its parameters all finite, but other than saved (what restored
    silently before checkpoints had checksums)."""
    import orbax.checkpoint as ocp

    def restore(directory):
        return ocp.StandardCheckpointer().restore(os.path.join(directory, "state"))

    saved = jax.tree_util.tree_leaves(restore(step_dir))
    for name in file_checksums.files_below(step_dir):
        if os.path.getsize(os.path.join(step_dir, name)) < 400:
            continue
        copy = os.path.join(scratch, "copy")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(step_dir, copy)
        flip_bytes(os.path.join(copy, name))
        try:
            restored = restore(copy)
        except Exception:  # orbax noticed
            continue
        finite = all(np.isfinite(leaf).all()
                     for leaf in jax.tree_util.tree_leaves(restored["params"]))
        if finite and any(not np.array_equal(a, b)
                          for a, b in zip(saved, jax.tree_util.tree_leaves(restored))):
            return name
    pytest.fail(f"Every flipped file of {step_dir} fails to restore or restores unchanged.")


def assert_same_state(expected, actual):
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(expected)),
                    jax.tree_util.tree_leaves(jax.device_get(actual))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's, as
def test_a_checkpoint_changed_in_place_is_set_aside_and_the_run_ends_as_uninterrupted(  # it fails

        setup, straight, tmp_path, caplog):
    """Bytes 100-400 of one file of the newest checkpoint flipped in place, where orbax alone
    would restore finite parameters other than those saved: the rerun names the checkpoint and
    the file, sets it aside, resumes from the one before and ends as an uninterrupted run."""
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "flipped")
    interrupted_at_step_5(setup, work_dir)
    newest = os.path.join(work_dir, "checkpoints", "4")
    damaged = file_orbax_misses_when_flipped(newest, str(tmp_path))
    flip_bytes(os.path.join(newest, damaged))
    resumed, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                        loop(7), model_config=MESH_TEST_CONFIG)
    assert (f"Checkpoint {newest} cannot be restored ({newest}/{damaged} is not what the save "
            "wrote (its SHA-256 differs))") in caplog.text
    assert "resuming from step 2, the newest valid one" in caplog.text
    assert summary["resumed_from"] == 2 and int(resumed.step) == 7
    assert os.listdir(os.path.join(work_dir, "checkpoints_unusable")) == ["4"]
    assert_same_state(straight, resumed)


@pytest.mark.slow
def test_a_checkpoint_without_checksums_is_set_aside_whole(setup, straight, tmp_path, caplog):
    """A kill after orbax finished step 4 and before its checksums were written: nothing can
    tell its files are as saved, so it is moved, whole, to checkpoints_unusable/ and the run
    resumes from step 2, ending as an uninterrupted run; the other steps keep checksums that
    still match after a resume."""
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "no_checksums")
    interrupted_at_step_5(setup, work_dir)
    checkpoint_dir = os.path.join(work_dir, "checkpoints")
    os.remove(os.path.join(checkpoint_dir, "4", checkpoint_checksums.CHECKSUMS_FILE))
    kept = file_checksums.files_below(os.path.join(checkpoint_dir, "4"))
    resumed, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                        loop(7), model_config=MESH_TEST_CONFIG)
    assert (f"Checkpoint {checkpoint_dir}/4 cannot be restored (it has no checksums.json, so "
            "its files cannot be checked)") in caplog.text
    assert summary["resumed_from"] == 2
    assert file_checksums.files_below(os.path.join(work_dir, "checkpoints_unusable", "4")) == kept
    assert_same_state(straight, resumed)
    assert sorted(os.listdir(checkpoint_dir)) == ["6", "7", KEPT, "operative_config.gin"]
    for saved in ("6", "7"):
        assert checkpoint_checksums.mismatch(os.path.join(checkpoint_dir, saved)) is None


@pytest.mark.slow
def test_checkpoints_saved_before_checksums_were_kept_resume_unverified(setup, straight,
                                                                         tmp_path, caplog):
    """A run started by a version without checksums: no step has any, and the directory lacks
    the marker a manager writes before its first save. Its newest checkpoint is restored (with a
    warning), not thrown away; the steps saved from then on carry checksums."""
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "before_checksums")
    interrupted_at_step_5(setup, work_dir)
    checkpoint_dir = os.path.join(work_dir, "checkpoints")
    os.remove(os.path.join(checkpoint_dir, checkpoint_checksums.CHECKSUMS_KEPT))
    for saved in ("2", "4"):
        os.remove(os.path.join(checkpoint_dir, saved, checkpoint_checksums.CHECKSUMS_FILE))
    keep_all = dataclasses.replace(loop(7), keep_checkpoints=5)  # step 4 stays, to look at
    resumed, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                        keep_all, model_config=MESH_TEST_CONFIG)
    assert summary["resumed_from"] == 4
    assert (f"{checkpoint_dir}/4 was saved before checkpoints carried checksums: restored "
            "without checking its files.") in caplog.text
    assert not os.path.exists(os.path.join(work_dir, "checkpoints_unusable"))
    assert_same_state(straight, resumed)
    assert checkpoint_checksums.keeps_checksums(checkpoint_dir)
    for saved in ("6", "7"):
        assert checkpoint_checksums.mismatch(os.path.join(checkpoint_dir, saved)) is None
    # The step restored unverified got its checksums before the marker was written: with the
    # newer ones gone (a kill before their checksums, say), a rerun still resumes from it.
    for newer in ("6", "7"):
        shutil.rmtree(os.path.join(checkpoint_dir, newer))
    assert checkpoint_checksums.mismatch(os.path.join(checkpoint_dir, "4")) is None
    _, again = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir, keep_all,
                                model_config=MESH_TEST_CONFIG)
    assert again["resumed_from"] == 4


def test_the_non_finite_loss_error_names_the_newest_checkpoint_that_matches_its_checksums(
        setup, tmp_path):
    """Step 4's checkpoint changed after it was saved (and its checksums written), then the
    loss of step 6 is NaN: the error names step 2, not the latest step, and says why not 4."""
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "nan_after_damage")
    step_4 = os.path.join(work_dir, "checkpoints", "4")
    calls = []

    def step_damaging_checkpoint_4_before_step_6(state, batch):
        calls.append(len(calls) + 1)
        if calls[-1] == 6:
            deadline = time.time() + 60
            while not os.path.exists(os.path.join(step_4, checkpoint_checksums.CHECKSUMS_FILE)):
                assert time.time() < deadline, "step 4's checksums were never written"
                time.sleep(0.01)
            flip_bytes(os.path.join(step_4, "state", "_METADATA"))
        return step(state, batch)

    with pytest.raises(train_loop.NonFiniteLossError) as raised:
        train_loop.train(fresh_state(), step_damaging_checkpoint_4_before_step_6,
                         sharded(make_batches(nan_at=5)), work_dir, loop(8),
                         model_config=MESH_TEST_CONFIG)
    message = str(raised.value)
    assert "Loss is nan at step 6" in message
    assert (f"The last good checkpoint is step 2 in {work_dir}/checkpoints, the newest whose "
            "files match their checksums (a rerun sets aside the newer ones: step 4: "
            f"{step_4}/state/_METADATA is not what the save wrote (its SHA-256 differs))"
            ) in message
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints"))) == [
        "2", "4", KEPT, "operative_config.gin"]  # left as they were


def closeness_to(target_params):
    """Evaluator: minus the squared distance of the parameters to `target_params`, so that
    the evaluation of the step that trained them is the best one."""
    @jax.jit
    def distance(params):
        return sum(jax.numpy.sum((a - b) ** 2) for a, b in zip(
            jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(target_params)))
    return lambda params: {"closeness": -float(distance(params))}


@pytest.mark.slow
def test_damaged_best_parameters_are_evaluated_again_from_a_checkpoint_before_them(
        setup, tmp_path, caplog):
    """best/ (the evaluation of step 4) changed after it was saved: it and checkpoint 4 are
    set aside, training resumes from step 2 and evaluates step 4 again, and the run ends with
    the best step, value and parameters of an uninterrupted run."""
    fresh_state, step, sharded = setup
    at_step_4, _ = train_loop.train(fresh_state(), step, sharded(make_batches()),
                                    str(tmp_path / "four_steps"), loop(4),
                                    model_config=MESH_TEST_CONFIG)
    evaluate = closeness_to(at_step_4.params)
    evaluating = loop(7, eval_every=2, best_metric="closeness")
    straight_dir = str(tmp_path / "straight")
    _, straight_summary = train_loop.train(fresh_state(), step, sharded(make_batches()),
                                           straight_dir, evaluating,
                                           model_config=MESH_TEST_CONFIG, evaluate=evaluate)
    assert straight_summary["best"]["step"] == 4  # evaluated at 2, 4, 6 and 7
    work_dir = str(tmp_path / "best_damaged")
    with pytest.raises(Interrupted):
        train_loop.train(fresh_state(), step, sharded(make_batches(interrupt_at=5)), work_dir,
                         evaluating, model_config=MESH_TEST_CONFIG, evaluate=evaluate)
    best_dir = os.path.join(work_dir, "best")
    assert json.load(open(os.path.join(best_dir, "best.json")))["step"] == 4
    flip_bytes(os.path.join(best_dir, orbax_params.PARAMS_SUBDIR, "_METADATA"))
    _, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                  evaluating, model_config=MESH_TEST_CONFIG, evaluate=evaluate)
    assert (f"The best parameters so far, in {best_dir}, cannot be used ({best_dir}/params/"
            "_METADATA is not what the save wrote (its SHA-256 differs)); training resumes "
            "before step 4 and evaluates it again") in caplog.text
    assert summary["resumed_from"] == 2
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints_unusable"))) == ["4", "best"]
    assert summary["best"] == straight_summary["best"]
    assert_same_state(
        orbax_params.restore_params(os.path.join(straight_dir, "best"), MESH_TEST_CONFIG),
        orbax_params.restore_params(best_dir, MESH_TEST_CONFIG))
    assert checkpoint_checksums.mismatch(best_dir) is None


METRICS_LOG_SCRIPT = """
import sys
from rso_jax.training import train_loop
log = train_loop.MetricsLog(sys.argv[1])
log.write(3, {"loss": 0.25}, prefix="train/")
log.close()
print("torch" in sys.modules)  # neither imported nor left blocked
"""


def test_the_metrics_log_writes_tensorboard_scalars_without_importing_torch(tmp_path):
    """PyTorch is installed beside the tests; tensorboardX would import it (1.5-2 s per run)."""
    import struct
    import subprocess
    import sys

    from tensorboardX.proto import event_pb2

    result = subprocess.run([sys.executable, "-c", METRICS_LOG_SCRIPT, str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False"]
    assert [json.loads(line) for line in open(tmp_path / "metrics.jsonl")] == [
        {"step": 3, "train/loss": 0.25}]
    (events_file,) = (tmp_path / "tensorboard").iterdir()
    data, scalars = events_file.read_bytes(), []
    while data:  # TFRecords: length (uint64), its CRC, the record, the record's CRC
        (length,) = struct.unpack("<Q", data[:8])
        event = event_pb2.Event.FromString(data[12:12 + length])
        scalars += [(event.step, value.tag, value.simple_value) for value in event.summary.value]
        data = data[12 + length + 4:]
    assert scalars == [(3, "train/loss", 0.25)]
