"""Pairwise reward-ranker scoring throughput: pairs/s of P(A) from one decoder step.

  python scripts/bench_ranker.py --size=small --batch=16 --input_length=512 --dtype=float32

Random weights (the cost does not depend on them). Each batch is encoded, the decoder runs a
single step from the start token, and only the 'A' and 'B' logits are projected. Compile
time is excluded (one warm-up call); the best of --repeats timed calls is reported. Prints one
JSON line and writes it to --output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rso_jax import partitioning  # noqa: E402
from rso_jax.t5 import model_sizes
from rso_jax.rewards import pairwise  # noqa: E402
from rso_jax.runtime.run_info import machine_description, report_benchmark  # noqa: E402

A_TOKEN, B_TOKEN = 71, 272  # T5's '▁A' and '▁B'; any two ids cost the same


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=model_sizes.SIZES)
    parser.add_argument("--batch", type=int, default=16, help="pairs per call")
    parser.add_argument("--input_length", type=int, default=512)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="bench_results/bench_ranker.json")
    args = parser.parse_args(argv)

    config = model_sizes.model_config(args.size, dtype=args.dtype, param_dtype=args.dtype)
    partitioner = partitioning.create_partitioner()
    params = partitioner.init_params(config, jax.random.PRNGKey(0))
    inputs = np.random.default_rng(0).integers(2, config.vocab_size,
                                               size=(args.batch, args.input_length))
    inputs = partitioner.shard_batch(inputs.astype(np.int32))
    scorer = pairwise.make_pair_scorer(config, A_TOKEN, B_TOKEN, partitioner)
    start = time.perf_counter()
    jax.block_until_ready(scorer(params, inputs))
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(scorer(params, inputs))
        best = min(best, time.perf_counter() - start)
    result = {"benchmark": "ranker_scoring", "size": args.size, "dtype": args.dtype,
              "batch": args.batch, "input_length": args.input_length,
              "seconds_per_batch": round(best, 4), "compile_seconds": round(compile_s, 2),
              "pairs_per_s": round(args.batch / best, 2), "machine": machine_description()}
    report_benchmark(result, args.output)
    return result


if __name__ == "__main__":
    main()
