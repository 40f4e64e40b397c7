"""The weight converter CLI: T5X -> HF -> orbax -> HF keeps every array; failures exit 2."""

import json
import os

import numpy as np

from rso_jax import checkpoints, convert, hf_weights, t5, param_tree, t5x_checkpoint
from t5_helpers import T5X_FIXTURE


def test_conversions_preserve_every_array(tmp_path, capsys):
    original = param_tree.flatten(t5x_checkpoint.load_params(T5X_FIXTURE))
    hf_dir, orbax_dir, hf_again = (str(tmp_path / n) for n in ("hf", "orbax", "hf_again"))
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=hf",
                         f"--output={hf_dir}"]) == 0
    assert convert.main(["--from=hf", f"--input={hf_dir}", "--to=orbax",
                         f"--output={orbax_dir}"]) == 0
    assert convert.main(["--from=orbax", f"--input={orbax_dir}", "--to=hf",
                         f"--output={hf_again}"]) == 0
    assert "518,240 values" in capsys.readouterr().out
    params, config = hf_weights.load(hf_again)
    for key, value in param_tree.flatten(params).items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    assert json.load(open(os.path.join(orbax_dir, "model_config.json")))["emb_dim"] == 8
    assert config == checkpoints.load_config(orbax_dir, t5.T5Config)


def test_bfloat16_cast_and_overwrite(tmp_path):
    out = str(tmp_path / "orbax_bf16")
    os.makedirs(out)
    (tmp_path / "orbax_bf16" / "stale_file").write_text("old")
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=orbax",
                         f"--output={out}", "--dtype=bfloat16", "--overwrite"]) == 0
    assert not os.path.exists(os.path.join(out, "stale_file"))  # replaced as a whole
    config = checkpoints.load_config(out, t5.T5Config)
    params = checkpoints.restore_params(out, config)
    assert config.param_dtype == "bfloat16"
    kernel = params["decoder"]["logits_dense"]["kernel"]
    assert str(kernel.dtype) == "bfloat16"
    reference = param_tree.flatten(t5x_checkpoint.load_params(T5X_FIXTURE))
    np.testing.assert_allclose(np.asarray(kernel, np.float32),
                               reference["decoder/logits_dense/kernel"], rtol=1e-2)


def test_failures_exit_with_a_message(tmp_path, capsys):
    assert convert.main(["--from=t5x", f"--input={tmp_path}/missing", "--to=hf",
                         f"--output={tmp_path}/out"]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
    assert convert.main(["--from=orbax", f"--input={tmp_path}", "--to=hf",
                         f"--output={tmp_path}/out"]) == 2
    assert "no model_config.json" in capsys.readouterr().err


def test_refuses_to_replace_a_file_or_a_non_empty_directory(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=hf",
                         f"--output={a_file}"]) == 2
    assert "is a file" in capsys.readouterr().err and a_file.read_text() == "keep me"
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine").write_text("keep me too")
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=hf",
                         f"--output={full}"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (full / "mine").read_text() == "keep me too"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert.main(["--from=t5x", f"--input={T5X_FIXTURE}", "--to=hf",
                         f"--output={empty}"]) == 0  # an empty directory is no loss
