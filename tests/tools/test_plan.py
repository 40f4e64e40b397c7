"""The memory plan: its figures for a tiny experiment are what XLA reports when the same
functions are compiled for real arrays on the mesh, the argument bytes are the parameter and
batch shards a device holds, and the smallest fitting mesh is found."""

import dataclasses
import subprocess
import sys

import jax
import numpy as np
import pytest

import experiment_helpers
from t5_helpers import REPO_ROOT
from rso_jax import partitioning
from rso_jax.tools import plan, stage_functions
from rso_jax.data import batching
from rso_jax.training import train_steps

FLAGS = [*experiment_helpers.DEMO_TINY_FLAGS, "--gin.DATA_PARALLELISM=4",
         "--gin.MODEL_PARALLELISM=2"]
MEMORY_FIELDS = ("argument_bytes", "output_bytes", "reused_bytes", "temporary_bytes",
                 "peak_bytes")


@pytest.fixture(scope="module")
def experiment():
    return experiment_helpers.build_experiment(FLAGS)


@pytest.fixture(scope="module")
def partitioner():
    mesh = partitioning.create_mesh(4, 2, devices=jax.devices()[:8])
    return partitioning.Partitioner(mesh, partitioning.logical_axis_rules(False))


@pytest.mark.parametrize("text, kind, devices", [
    ("v4-8", "TPU v4", 4), ("v5p-16", "TPU v5p", 8), ("v5e-16", "TPU v5e", 16),
    ("8xH100-80GB", "H100 80GB", 8), ("h100-80gb", "H100 80GB", 1),
    ("4xa100-40gb", "A100 40GB", 4)])
def test_mesh_names_are_read_as_their_device_counts(text, kind, devices):
    mesh = plan.parse_mesh(text)
    assert (mesh.accelerator.name, mesh.num_devices) == (kind, devices)


@pytest.mark.parametrize("text, message", [
    ("8xv100", "the kinds are a100-40gb, .*h100-80gb"), ("h100", "the kinds are"),
    ("8xv4-8", "the kinds are"), ("v4-7", "a TPU v4 slice name counts 2 cores per chip"),
    ("0xh100-80gb", "at least one device")])
def test_a_mesh_that_is_not_one_is_refused_saying_why(text, message):
    with pytest.raises(ValueError, match=message):
        plan.parse_mesh(text)


def real_lowered(name, experiment, partitioner):
    """The stage function lowered for real arrays on the mesh (parameters initialised)."""
    key = jax.random.PRNGKey(0)
    sizes, lengths = experiment.inference_batch_sizes, experiment.lengths
    function = {f.name: f for f in (make(experiment) for make in plan.STAGE_FUNCTIONS)}[name]
    params = partitioner.init_params(function.model, key)
    tokens = lambda rows, length: np.ones((rows, length), np.int32)
    from rso_jax.rewards import pairwise
    from rso_jax.experiment import inference
    from rso_jax.experiment.stages import preference
    if name == "preference train step":
        rows = experiment.preference.batch_size
        batch = batching.preference_batch_from_tokens(
            tokens(rows, lengths.prompt), tokens(rows, lengths.response),
            tokens(rows, lengths.response), np.zeros(rows, np.float32),
            np.zeros(rows, np.float32))
        optimizer = experiment.preference.make_optimizer()
        step = train_steps.make_train_step(partitioner, experiment.policy_config, optimizer,
                                        preference.training_data(experiment).loss_function(experiment), batch)
        state = train_steps.place_state(partitioner, experiment.policy_config, optimizer,
                                     params, key)
        return step.lower(state, partitioner.shard_batch(batch))
    if name == "sampler":
        sampler = inference.sampler(experiment.policy_config, experiment.sampling, partitioner)
        return sampler.lower(params, partitioner.shard_batch(
            tokens(sizes.sample, lengths.prompt)), key)
    if name == "ranker scorer":
        inputs = partitioner.shard_batch(tokens(sizes.ranker, lengths.ranker_input))
        return inference.both_orders_scorer(pairwise.rewards_vs_baseline,
                                            experiment.ranker_config, 71, 272,
                                            partitioner).lower(params, inputs, inputs)
    prompts, responses = partitioner.shard_batch((tokens(sizes.reference, lengths.prompt),
                                                  tokens(sizes.reference, lengths.response)))
    return inference.sequence_scorer(experiment.policy_config, partitioner).lower(
        params, prompts, responses)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["preference train step", "sampler", "ranker scorer",
                                  "reference scorer"])
def test_the_plans_figures_are_what_xla_reports_for_the_real_compile(name, experiment,
                                                                     partitioner):
    function = {f.name: f for f in (make(experiment) for make in plan.STAGE_FUNCTIONS)}[name]
    planned = plan.compile_on(function, 8, 2, False)
    assert (planned["data"], planned["model"]) == (4, 2)
    real = plan.memory_figures(real_lowered(name, experiment, partitioner).compile())
    for field in MEMORY_FIELDS:
        assert planned[field] == real[field], field
    assert planned["flops"] == pytest.approx(real["flops"], rel=1e-6) and real["flops"] > 0
    if name == "preference train step":  # the state is donated: its buffers are reused
        assert 0 < planned["reused_bytes"] <= planned["output_bytes"]


def shard_bytes(shape, dtype, sharding) -> int:
    """Bytes of one device's shard of an array, from its shape and sharding."""
    return int(np.prod(sharding.shard_shape(tuple(shape)), dtype=np.int64)) * np.dtype(dtype).itemsize


def test_the_reference_scorers_arguments_are_the_shards_one_device_holds(experiment,
                                                                         partitioner):
    config, lengths = experiment.policy_config, experiment.lengths
    rows = experiment.inference_batch_sizes.reference
    shapes = jax.tree_util.tree_leaves(config.param_shapes())
    shardings = jax.tree_util.tree_leaves(partitioner.param_shardings(config))
    expected = sum(shard_bytes(s.shape, s.dtype, sh) for s, sh in zip(shapes, shardings))
    batch = partitioner.batch_sharding(2)
    expected += shard_bytes((rows, lengths.prompt), np.int32, batch)
    expected += shard_bytes((rows, lengths.response), np.int32, batch)
    function = stage_functions.reference_scorer(experiment)
    assert plan.compile_on(function, 8, 2, False)["argument_bytes"] == expected
    # one device holds every row and all parameters: more bytes than a shard of eight
    assert plan.compile_on(function, 1, 1, False)["argument_bytes"] > expected
    assert "does not divide 1 devices" in plan.compile_on(function, 1, 2, False)["error"]


def test_a_selected_responses_experiments_train_step_takes_their_sft_batch(experiment,
                                                                          partitioner):
    raft = dataclasses.replace(experiment, selection=dataclasses.replace(experiment.selection,
                                                                         method="raft"))
    function = stage_functions.preference_train_step(raft)
    rows, response = raft.preference.batch_size, raft.lengths.response
    assert function.shapes.startswith(f"{rows} selected responses, ")
    _, batch = function.lower(partitioner).args_info[0]
    assert isinstance(batch, batching.SftBatch)
    assert batch.inputs.shape == (rows, raft.lengths.prompt) and batch.inputs.dtype == np.int32
    assert batch.targets.shape == batch.loss_weights.shape == (rows, response)
    assert batch.loss_weights.dtype == np.float32


def test_a_pointwise_experiments_ranker_scorer_is_planned(experiment):
    pointwise = dataclasses.replace(experiment, scorer="pointwise")
    planned = plan.compile_on(stage_functions.ranker_scorer(pointwise), 8, 2, False)
    assert planned["argument_bytes"] > 0 and planned["flops"] > 0


@pytest.mark.slow
def test_the_smallest_fitting_mesh_is_the_first_whose_peak_fits(experiment):
    function = stage_functions.reference_scorer(experiment)
    peaks = {n: plan.compile_on(function, n, 1, False)["peak_bytes"] for n in (1, 2, 4, 8)}
    assert peaks[1] > peaks[2] > peaks[4] > peaks[8]
    tight = plan.Accelerator("test device", memory_bytes=(peaks[2] + peaks[4]) // 2,
                             usable_fraction=1.0)
    for start in (1, 8):  # searched up from a mesh that does not fit, down from one that does
        row = plan.plan_function(function, plan.MeshSpec(tight, start), 1, False,
                                 max_devices=8)
        assert row["smallest_fitting_devices"] == 4, start
        assert row["fits"] == (start == 8)
    tiny = dataclasses.replace(tight, memory_bytes=peaks[8] // 2)
    assert plan.plan_function(function, plan.MeshSpec(tiny, 8), 1, False,
                              8)["smallest_fitting_devices"] is None


def test_a_batch_the_data_axis_cannot_split_is_reported_not_compiled(experiment):
    function = dataclasses.replace(stage_functions.reference_scorer(experiment), rows=12)
    assert "do not split over data=8" in plan.compile_on(function, 8, 1, False)["error"]


def test_the_command_refuses_an_unknown_mesh_naming_the_kinds():
    result = subprocess.run([sys.executable, "-m", "rso_jax.tools.plan", "--mesh=v99-8",
                             *experiment_helpers.DEMO_TINY_FLAGS], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "--mesh=v99-8 is not a mesh" in result.stderr and "v5e" in result.stderr


def test_a_paper_config_is_planned_without_its_checkpoints_or_data():
    """The TL;DR config leaves its initial checkpoints REQUIRED: the plan fills them with
    placeholders and reads nothing, so its shapes are the paper's."""
    import gin
    try:
        experiment = plan.build_experiment(
            ["configs/rso_table1/tldr_rso_sample_rank_sigmoid_norm.gin"], [])
    finally:
        gin.clear_config()
    train = stage_functions.preference_train_step(experiment)
    assert train.shapes == "32 pairs, 512-token prompts, 64-token responses"
    assert experiment.policy_config.emb_dim == 1024 and experiment.ranker_config.emb_dim == 4096
    assert stage_functions.ranker_scorer(experiment).shapes == "64 inputs of 1024 tokens, both orders"
