"""The weight converter CLI: T5X -> HF -> orbax -> HF and T5X -> T5X keep every array, a
trained policy exports to T5X; failures exit 2."""

import functools
import json
import os

import jax
import numpy as np
import pytest

from rso_jax import partitioning, t5
from rso_jax.data import batching
from rso_jax.training import optimizers, train_steps
from rso_jax.weights import convert, formats, hf, orbax_params, t5x, tree
from rso_jax.experiment import artifacts
from t5_helpers import MESH_TEST_CONFIG, T5X_FIXTURE, padded_tokens


def test_conversions_preserve_every_array(tmp_path, capsys):
    original = tree.flatten(t5x.load_params(T5X_FIXTURE))
    hf_dir, orbax_dir, hf_again = (str(tmp_path / n) for n in ("hf", "orbax", "hf_again"))
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=hf",
                         f"--output={hf_dir}"]) == 0
    assert convert.main(["--from=hf", f"--input={hf_dir}", "--to=orbax",
                         f"--output={orbax_dir}"]) == 0
    assert convert.main(["--from=orbax", f"--input={orbax_dir}", "--to=hf",
                         f"--output={hf_again}"]) == 0
    assert "518,240 values" in capsys.readouterr().out
    params, config = hf.load(hf_again)
    for key, value in tree.flatten(params).items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    assert json.load(open(os.path.join(orbax_dir, "model_config.json")))["emb_dim"] == 8
    assert config == orbax_params.load_config(orbax_dir, t5.T5Config)


def test_bfloat16_cast_and_overwrite(tmp_path):
    out = str(tmp_path / "orbax_bf16")
    os.makedirs(out)
    (tmp_path / "orbax_bf16" / "stale_file").write_text("old")
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=orbax",
                         f"--output={out}", "--dtype=bfloat16", "--overwrite"]) == 0
    assert not os.path.exists(os.path.join(out, "stale_file"))  # replaced as a whole
    config = orbax_params.load_config(out, t5.T5Config)
    params = orbax_params.restore_params(out, config)
    assert config.param_dtype == "bfloat16"
    kernel = params["decoder"]["logits_dense"]["kernel"]
    assert str(kernel.dtype) == "bfloat16"
    reference = tree.flatten(t5x.load_params(T5X_FIXTURE))
    np.testing.assert_allclose(np.asarray(kernel, np.float32),
                               reference["decoder/logits_dense/kernel"], rtol=1e-2)


def test_failures_exit_with_a_message(tmp_path, capsys):
    assert convert.main(["--from=t5x", f"--input={tmp_path}/missing", "--to=hf",
                         f"--output={tmp_path}/out"]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
    assert convert.main(["--from=orbax", f"--input={tmp_path}", "--to=hf",
                         f"--output={tmp_path}/out"]) == 2
    error = capsys.readouterr().err
    assert "is not a checkpoint in any known format" in error and "model_config.json" in error
    assert convert.main(["--from=hf", f"--input={T5X_FIXTURE}", "--to=orbax",
                         f"--output={tmp_path}/out"]) == 2
    assert "is a t5x checkpoint, not hf" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("target", ["hf", "t5x"])
def test_refuses_to_replace_a_file_or_a_non_empty_directory(tmp_path, capsys, target):
    def convert_to(output, *flags):
        return convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", f"--to={target}",
                             f"--output={output}", *flags])

    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    assert convert_to(a_file) == 2
    assert "is a file" in capsys.readouterr().err and a_file.read_text() == "keep me"
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine").write_text("keep me too")
    assert convert_to(full) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert os.listdir(full) == ["mine"] and (full / "mine").read_text() == "keep me too"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert_to(empty) == 0  # an empty directory is no loss
    if target == "t5x":
        assert convert_to(full, "--overwrite", "--step=3") == 0
        assert os.listdir(full) == ["checkpoint_3"]  # replaced as a whole


def assert_same_tree(loaded, expected):
    """Same tree, and every leaf the same array bit for bit (dtype and shape included)."""
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(expected)
    loaded = tree.flatten(loaded)
    for key, value in tree.flatten(expected).items():
        value = np.asarray(value)
        assert (loaded[key].dtype, loaded[key].shape) == (value.dtype, value.shape), key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_t5x_to_t5x_round_trips_every_parameter(tmp_path, capsys):
    out = str(tmp_path / "t5x")
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=t5x",
                         f"--output={out}"]) == 0
    written = os.path.join(out, "checkpoint_0")  # --step defaults to 0
    printed = capsys.readouterr()
    assert printed.out.rstrip().endswith(f"to {written}")
    assert printed.err == ""  # the fixture's relative_attention_max_distance is T5X's 128
    assert os.listdir(out) == ["checkpoint_0"]
    assert_same_tree(t5x.load_params(written), t5x.load_params(T5X_FIXTURE))


@pytest.fixture(scope="module")
def trained_policy(tmp_path_factory):
    """A tiny policy trained for two SFT steps and saved where an experiment saves its trained
    policy (WORK_DIR/preference/params); returns (work dir, initial and trained parameters)."""
    partitioner = partitioning.Partitioner(
        partitioning.create_mesh(1, 1, devices=jax.devices()[:1]))
    rng = np.random.default_rng(0)
    batch = batching.sft_batch_from_tokens(
        padded_tokens(rng, [12, 5, 9, 12], 12, MESH_TEST_CONFIG.vocab_size),
        padded_tokens(rng, [7, 2, 5, 7], 7, MESH_TEST_CONFIG.vocab_size))
    optimizer = optimizers.adafactor(learning_rate=1e-2)
    step = train_steps.make_train_step(
        partitioner, MESH_TEST_CONFIG, optimizer,
        functools.partial(train_steps.sft_loss, model_config=MESH_TEST_CONFIG), batch)
    initial = jax.device_get(t5.init_params(MESH_TEST_CONFIG, jax.random.PRNGKey(0)))
    state = train_steps.place_state(partitioner, MESH_TEST_CONFIG, optimizer, initial,
                                 jax.random.PRNGKey(1))
    for _ in range(2):
        state, _ = step(state, partitioner.shard_batch(batch))
    work_dir = str(tmp_path_factory.mktemp("run"))
    artifacts.save_params(work_dir, "preference", state.params, MESH_TEST_CONFIG)
    return work_dir, initial, jax.device_get(state.params)


@pytest.mark.slow
def test_a_trained_policy_exports_to_t5x(trained_policy, tmp_path, capsys):
    work_dir, initial, trained = trained_policy
    out = str(tmp_path / "t5x")
    assert convert.main(["--from=orbax", f"--input={artifacts.params_path(work_dir, 'preference')}",
                         "--to=t5x", f"--output={out}", "--step=2"]) == 0
    # The checkpoint cannot carry the relative_attention_max_distance (16): the user is told.
    assert "--relative_attention_max_distance=16 when converting it back" in capsys.readouterr().err
    written = os.path.join(out, "checkpoint_2")
    assert_same_tree(t5x.load_params(written), trained)
    assert not np.array_equal(trained["decoder"]["logits_dense"]["kernel"],
                              initial["decoder"]["logits_dense"]["kernel"])  # it did train
    assert t5x.load_state(written)["optimizer"]["state"]["step"] == 2
    # An experiment can start from it (SFT_CHECKPOINT and the like take T5X checkpoints).
    assert formats.detect_format(written) == "t5x"
    formats.check_fits(written, MESH_TEST_CONFIG, "SFT_CHECKPOINT")


def test_t5x_output_keeps_a_cast_dtype(tmp_path):
    out = str(tmp_path / "t5x_bf16")
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=t5x", f"--output={out}",
                         "--dtype=bfloat16", "--step=5", "--adafactor_momentum"]) == 0
    state = t5x.load_state(os.path.join(out, "checkpoint_5"))
    kernel = state["optimizer"]["target"]["decoder"]["logits_dense"]["kernel"]
    reference = t5x.load_params(T5X_FIXTURE)["decoder"]["logits_dense"]["kernel"]
    assert str(kernel.dtype) == "bfloat16"
    np.testing.assert_array_equal(kernel, reference.astype(kernel.dtype))
    adafactor = state["optimizer"]["state"]["param_states"]["decoder"]["logits_dense"]["kernel"]
    assert adafactor["m"].shape == (8, 32128) and adafactor["m"].dtype == np.float32


def test_t5x_options_are_refused_where_they_do_not_apply(tmp_path, capsys):
    out = tmp_path / "out"
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=hf", f"--output={out}",
                         "--step=3", "--adafactor_momentum"]) == 2
    assert ("--step and --adafactor_momentum only apply to --to=t5x"
            in capsys.readouterr().err)
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=t5x", f"--output={out}",
                         "--step=-1"]) == 2
    assert "step -1 is negative" in capsys.readouterr().err
    assert not out.exists()
