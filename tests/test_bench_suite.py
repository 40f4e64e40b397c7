"""The one-command benchmark suite, checked on the CPU at tiny sizes: every benchmark runs (with
its HF / PyTorch baseline) and lands in one JSON file; a failing one is recorded, not fatal."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import experiment_helpers
from t5_helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # runs every benchmark script

SUITE = os.path.join(REPO_ROOT, "scripts", "bench_suite.py")


def load_suite():
    spec = importlib.util.spec_from_file_location("bench_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tiny_suite_runs_every_benchmark_into_one_file(tmp_path):
    output = tmp_path / "suite.json"
    env = experiment_helpers.ONE_DEVICE_ENV
    result = subprocess.run([sys.executable, SUITE, "--tiny", f"--output={output}"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    suite = json.loads(output.read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == suite
    assert suite["suite"] == "tiny" and suite["failed"] == []
    assert suite["machine"]["platform"] == "cpu"
    benchmarks = suite["benchmarks"]
    assert sorted(benchmarks) == sorted(load_suite().ACCELERATOR)
    sampling = benchmarks["sampling"]["result"]
    assert sampling["benchmark"] == "sampling" and sampling["size"] == "tiny"
    assert sampling["candidate_tokens_per_s"] > 0 and sampling["hf_candidate_tokens_per_s"] > 0
    step = benchmarks["preference_step"]["result"]
    assert step["pairs"] == 4 and step["pairs_per_s"] > 0 and step["torch_pairs_per_s"] > 0
    # the same weights and batch give the same DPO loss on both sides (log 2 at the start)
    assert abs(step["loss"] - step["torch_loss"]) < 1e-3
    assert benchmarks["ranker"]["result"]["pairs_per_s"] > 0
    selection = benchmarks["selection"]["result"]
    assert selection["num_prompts"] == 1000 and selection["jit_prompts_per_s"] > 0
    for entry in benchmarks.values():
        assert entry["command"].startswith("python scripts/bench_")


def test_the_accelerator_settings_are_the_papers():
    settings = load_suite().ACCELERATOR
    assert {"--size=large", "--dtype=bfloat16", "--num_candidates=64", "--prompt_length=512",
            "--new_tokens=64"} <= set(settings["sampling"])
    assert {"--size=large", "--dtype=bfloat16", "--pairs=32", "--prompt_length=512",
            "--response_length=64"} <= set(settings["preference_step"])
    assert {"--size=xxl", "--dtype=bfloat16", "--input_length=512"} <= set(settings["ranker"])


def test_a_failing_benchmark_is_recorded_with_its_error(tmp_path):
    entry = load_suite().run_one("ranker", ["scripts/bench_ranker.py", "--size=huge"],
                                 skip_baselines=True, timeout=120)
    assert "result" not in entry
    assert entry["error"].startswith("exit code 2") and "huge" in entry["error"]
