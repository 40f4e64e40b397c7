"""Training loop: exact resume after an interruption, NaN stops cleanly, best checkpoint kept."""

import functools
import json
import os
import signal
import shutil

import jax
import numpy as np
import pytest

from rso_jax import batching, checkpoints, t5, partitioning, train_loop, training
from t5_helpers import MESH_TEST_CONFIG, padded_tokens


class Interrupted(Exception):
    pass


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
    optimizer = training.adafactor(learning_rate=1e-2)
    params = jax.device_get(t5.init_params(MESH_TEST_CONFIG, jax.random.PRNGKey(0)))
    loss_fn = functools.partial(training.sft_loss, model_config=MESH_TEST_CONFIG)
    example = next(make_batches()(0))
    step = training.make_train_step(partitioner, MESH_TEST_CONFIG, optimizer, loss_fn, example)

    def fresh_state():
        return training.place_state(partitioner, MESH_TEST_CONFIG, optimizer, params,
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


def test_interrupted_and_resumed_run_equals_uninterrupted(setup, straight, tmp_path):
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "interrupted")
    interrupted_at_step_5(setup, work_dir)
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints"))) == [
        "2", "4", "operative_config.gin"]
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
        "2", "3", "operative_config.gin"]
    resumed, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                        loop(7), model_config=MESH_TEST_CONFIG)
    assert summary["resumed_from"] == 3 and summary["step"] == 7
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(straight)),
                    jax.tree_util.tree_leaves(jax.device_get(resumed))):
        np.testing.assert_array_equal(a, b)


def test_a_run_saved_on_8_devices_resumes_on_4(setup, straight, tmp_path):
    """Checkpoints of a (data 4, model 2) mesh restored onto a (data 2, model 2) mesh of 4 other
    devices: the state takes the new shardings and training continues to the uninterrupted
    run's state (up to the summation order of the other mesh)."""
    work_dir = str(tmp_path / "remeshed")
    interrupted_at_step_5(setup, work_dir)
    partitioner = partitioning.Partitioner(
        mesh=partitioning.create_mesh(2, 2, devices=jax.devices()[4:]))
    optimizer = training.adafactor(learning_rate=1e-2)
    loss_fn = functools.partial(training.sft_loss, model_config=MESH_TEST_CONFIG)
    step = training.make_train_step(partitioner, MESH_TEST_CONFIG, optimizer, loss_fn,
                                    next(make_batches()(0)))
    params = jax.device_get(t5.init_params(MESH_TEST_CONFIG, jax.random.PRNGKey(0)))
    state = training.place_state(partitioner, MESH_TEST_CONFIG, optimizer, params,
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


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(setup, tmp_path):
    fresh_state, step, sharded = setup
    work_dir = str(tmp_path / "nan")
    with pytest.raises(train_loop.NonFiniteLossError, match="at step 4 .* last good checkpoint "
                                                            "is step 2"):
        train_loop.train(fresh_state(), step, sharded(make_batches(nan_at=3)), work_dir, loop(8),
                         model_config=MESH_TEST_CONFIG)
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints"))) == ["2", "operative_config.gin"]
    restored, summary = train_loop.train(fresh_state(), step, sharded(make_batches()), work_dir,
                                         loop(2), model_config=MESH_TEST_CONFIG)
    assert summary["resumed_from"] == 2
    assert all(np.isfinite(leaf).all()
               for leaf in jax.tree_util.tree_leaves(jax.device_get(restored.params)))


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
    assert checkpoints.load_config(best_dir, t5.T5Config) == MESH_TEST_CONFIG
    params = checkpoints.restore_params(best_dir, MESH_TEST_CONFIG)
    np.testing.assert_array_equal(np.asarray(params["decoder"]["logits_dense"]["kernel"]), seen[1])
    evals = [json.loads(line) for line in open(os.path.join(work_dir, "metrics.jsonl"))
             if "eval/win_rate" in line]
    assert [e["step"] for e in evals] == [2, 4, 6]
    assert os.listdir(os.path.join(work_dir, "tensorboard"))


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
