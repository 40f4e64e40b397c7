"""Every benchmark at its accelerator settings, in one command, into one JSON file.

  python scripts/bench_suite.py --output bench_results/suite.json           # on a GPU or TPU
  python scripts/bench_suite.py --tiny --output bench_results/suite_tiny.json  # CPU check

The accelerator settings are the papers' and our peers' (docs/benchmarks.md):
  sampling    T5 v1.1 large, bf16, 64 candidates per 512-token prompt, 64 new tokens, against
              HF transformers' generate on the same weights;
  preference  one sigmoid-norm step of T5 v1.1 large, bf16 compute, 32 pairs of 512/64 tokens,
              against a PyTorch DPO step in the usual style;
  ranker      T5 v1.1 XXL, bf16, P(A) of pairs of 512 tokens;
  selection   Algorithm 1 on 100,000 prompts x 64 candidates, keeping 8.
`--tiny` runs the same benchmarks with the tiny model and small shapes, so that the CPU checks
the whole suite in a minute or two. Each benchmark runs in its own process (one's memory is
freed before the next starts, and a PyTorch baseline does not compete with JAX's preallocated
memory), under --timeout seconds; a benchmark that fails is recorded with its error and the
others still run. The suite's own process never starts JAX (it would hold the devices, or on
a GPU 75% of their memory, for the whole suite). The file holds the machine (as the benchmarks
report it) and, per benchmark, its command and its JSON line (or its error); the command prints
the same object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

ACCELERATOR = {
    "sampling": ["scripts/bench_sampling.py", "--size=large", "--dtype=bfloat16",
                 "--num_prompts=16", "--num_candidates=64", "--prompt_length=512",
                 "--new_tokens=64", "--repeats=3"],
    "preference_step": ["scripts/bench_train.py", "--size=large", "--dtype=bfloat16",
                        "--pairs=32", "--prompt_length=512", "--response_length=64",
                        "--warmup=2", "--steps=5"],
    "ranker": ["scripts/bench_ranker.py", "--size=xxl", "--dtype=bfloat16", "--batch=32",
               "--input_length=512", "--repeats=5"],
    "selection": ["scripts/bench_selection.py", "--num_prompts=100000",
                  "--num_candidates=64", "--num_samples=8", "--beta=0.5",
                  "--reference_prompts=2000"],
}
TINY = {
    "sampling": ["scripts/bench_sampling.py", "--size=tiny", "--dtype=float32",
                 "--num_prompts=2", "--num_candidates=4", "--prompt_length=16",
                 "--new_tokens=8", "--repeats=1"],
    "preference_step": ["scripts/bench_train.py", "--size=tiny", "--dtype=float32",
                        "--pairs=4", "--prompt_length=16", "--response_length=8",
                        "--warmup=1", "--steps=1"],
    "ranker": ["scripts/bench_ranker.py", "--size=tiny", "--dtype=float32", "--batch=4",
               "--input_length=32", "--repeats=1"],
    "selection": ["scripts/bench_selection.py", "--num_prompts=1000", "--num_candidates=16",
                  "--num_samples=4", "--beta=0.5", "--reference_prompts=50", "--repeats=2",
                  "--reference_repeats=1"],
}
BASELINE_FLAGS = {"sampling": "--skip_hf", "preference_step": "--skip_torch"}
# The benchmarks that run on the accelerator (selection runs on the host's CPU cores); the
# suite's machine is the one their lines describe.
MODEL_BENCHMARKS = ("sampling", "preference_step", "ranker")


def run_one(name: str, arguments: list[str], skip_baselines: bool, timeout: float) -> dict:
    """One benchmark in its own process; its JSON line, or what went wrong."""
    arguments = list(arguments)
    if skip_baselines and name in BASELINE_FLAGS:
        arguments.append(BASELINE_FLAGS[name])
    with tempfile.TemporaryDirectory() as directory:
        output = os.path.join(directory, f"{name}.json")
        command = [sys.executable, *arguments, f"--output={output}"]
        # PyTorch baselines share the device: JAX allocates as it goes instead of taking 75%.
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
        start = time.perf_counter()
        entry = {"command": " ".join(["python", *arguments])}
        try:
            result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                                    text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {**entry, "error": f"timed out after {timeout:.0f} s"}
        entry["wall_seconds"] = round(time.perf_counter() - start, 1)
        if result.returncode != 0 or not os.path.isfile(output):
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            return {**entry, "error": f"exit code {result.returncode}: " + " | ".join(tail)}
        with open(output) as stream:
            return {**entry, "result": json.loads(stream.read())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny model and shapes: the CPU check of the whole suite")
    parser.add_argument("--only", default="",
                        help="comma-separated subset of " + ", ".join(ACCELERATOR))
    parser.add_argument("--skip_baselines", action="store_true",
                        help="time only our functions (no HF generate, no PyTorch step)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds each benchmark may take")
    parser.add_argument("--output", default="bench_results/suite.json")
    args = parser.parse_args(argv)
    settings = TINY if args.tiny else ACCELERATOR
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(settings)
    unknown = [n for n in names if n not in settings]
    if unknown:
        parser.error(f"--only: unknown benchmarks {unknown}; they are {list(settings)}.")

    from rso_jax.runtime import atomic_io  # (no JAX here: the benchmarks own the devices)

    suite = {"suite": "tiny" if args.tiny else "accelerator", "benchmarks": {}}
    for name in names:
        suite["benchmarks"][name] = run_one(name, settings[name], args.skip_baselines,
                                            args.timeout)
        print(f"{name}: {json.dumps(suite['benchmarks'][name])}", file=sys.stderr, flush=True)
    suite["failed"] = sorted(n for n, entry in suite["benchmarks"].items() if "error" in entry)
    suite["machine"] = next((entry["result"]["machine"] for name, entry in
                             suite["benchmarks"].items()
                             if name in MODEL_BENCHMARKS and "result" in entry), None)
    atomic_io.write_json(args.output, suite)
    print(json.dumps(suite, sort_keys=True))
    return suite


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
