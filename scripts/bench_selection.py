"""Benchmark: statistical rejection sampling, jitted, against the paper's Python loop.

    python scripts/bench_selection.py --num_prompts 100000 --num_candidates 64 \
        --num_samples 8 --beta 0.5 --reference_prompts 2000 \
        --output bench_results/bench_selection.json

Rewards are i.i.d. N(0, 1), every candidate valid. The jitted sampler
(`rejection_sampling.statistical_rejection_sampling`) runs on the CPU with the prompts split
over one XLA CPU device per core (shard_map); compilation and one warm-up call are excluded and
every timed call ends with `block_until_ready`; the median of `--repeats` calls is reported.
The reference is Algorithm 1 exactly as the paper writes it (plain Python, a fresh uniform per
candidate and round), timed on the first `--reference_prompts` prompts of the same input (median
of `--reference_repeats` passes) and scaled to all of them. Prints one JSON line and writes the
same line to `--output`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_prompts", type=int, default=100_000)
    parser.add_argument("--num_candidates", type=int, default=64)
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--reference_prompts", type=int, default=2000,
                        help="prompts the Python loop is timed on (then scaled)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed jitted calls (the median is reported)")
    parser.add_argument("--reference_repeats", type=int, default=3,
                        help="timed passes of the Python loop (the median is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench_results/bench_selection.json")
    return parser.parse_args(argv)


def paper_loop(rewards, beta, num_samples, rng):
    """Algorithm 1 for one prompt, as written in the paper. Returns (accepted, rounds)."""
    remaining = list(range(len(rewards)))
    accepted, rounds = [], 0
    while len(accepted) < num_samples and remaining:
        rounds += 1
        max_r = max(rewards[c] for c in remaining)  # Recomputed every round.
        newly = []
        for c in remaining:
            if rng.random() < math.exp((rewards[c] - max_r) / beta):
                if len(accepted) + len(newly) < num_samples:  # At most num_samples in all.
                    newly.append(c)
        accepted += newly
        chosen = set(newly)
        remaining = [c for c in remaining if c not in chosen]  # Without replacement.
    return accepted, rounds


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    args = parse_args(argv)
    num_cores = os.cpu_count() or 1
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={num_cores}")

    import jax  # After XLA_FLAGS: one CPU device per core.
    import numpy as np
    from jax.sharding import PartitionSpec

    from rso_jax.runtime.run_info import report_benchmark
    from rso_jax.selection.rejection_sampling import statistical_rejection_sampling

    rng = np.random.default_rng(args.seed)
    rewards = rng.standard_normal((args.num_prompts, args.num_candidates), dtype=np.float32)

    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("data",), devices=devices)
    # Pad the prompts to a multiple of the device count with prompts that have no candidates.
    padded_prompts = -(-args.num_prompts // len(devices)) * len(devices)
    pad = ((0, padded_prompts - args.num_prompts), (0, 0))
    mask = np.pad(np.ones(rewards.shape, bool), pad)
    sharding = jax.sharding.NamedSharding(mesh, PartitionSpec("data"))
    rewards_device = jax.device_put(np.pad(rewards, pad), sharding)
    mask_device = jax.device_put(mask, sharding)

    def sample_shard(rewards_pn, mask_pn, key):
        key = jax.random.fold_in(key, jax.lax.axis_index("data"))  # Distinct draws per shard.
        return statistical_rejection_sampling(rewards_pn, mask_pn, key, args.beta,
                                              num_samples=args.num_samples)

    sample = jax.jit(jax.shard_map(sample_shard, mesh=mesh,
                                   in_specs=(PartitionSpec("data"), PartitionSpec("data"),
                                             PartitionSpec()),
                                   out_specs=PartitionSpec("data"), check_vma=False))
    base_key = jax.random.key(args.seed)
    start = time.perf_counter()
    sample.lower(rewards_device, mask_device, base_key).compile()
    compile_s = time.perf_counter() - start
    selection, stats = jax.block_until_ready(sample(rewards_device, mask_device, base_key))
    times = []
    for repeat in range(args.repeats):
        key = jax.random.fold_in(base_key, repeat + 1)
        start = time.perf_counter()
        selection, stats = jax.block_until_ready(sample(rewards_device, mask_device, key))
        times.append(time.perf_counter() - start)
    jit_s = statistics.median(times)
    num_accepted = np.asarray(stats.num_accepted)[:args.num_prompts]
    if not np.all(num_accepted == args.num_samples):
        raise RuntimeError("The jitted sampler kept fewer than num_samples responses.")

    reference_rewards = rewards[:args.reference_prompts].tolist()
    reference_times = []
    for repeat in range(args.reference_repeats):
        reference_rng = random.Random(args.seed + repeat)
        start = time.perf_counter()
        reference = [paper_loop(row, args.beta, args.num_samples, reference_rng)
                     for row in reference_rewards]
        reference_times.append(time.perf_counter() - start)
    reference_rate = len(reference_rewards) / statistics.median(reference_times)
    reference_total_s = args.num_prompts / reference_rate

    device_kind = devices[0].device_kind
    result = {
        "benchmark": "selection",
        "num_prompts": args.num_prompts,
        "num_candidates": args.num_candidates,
        "num_samples": args.num_samples,
        "beta": args.beta,
        "jit_ms_total": round(jit_s * 1e3, 2),
        "jit_ms_min": round(min(times) * 1e3, 2),
        "jit_prompts_per_s": round(args.num_prompts / jit_s),
        "compile_s": round(compile_s, 2),
        "reference_prompts": len(reference_rewards),
        "reference_prompts_per_s": round(reference_rate),
        "reference_ms_total_scaled": round(reference_total_s * 1e3, 1),
        "speedup": round(reference_total_s / jit_s, 1),
        "jit_mean_rounds": round(float(np.asarray(stats.num_rounds)[:args.num_prompts].mean()),
                                 4),
        "reference_mean_rounds": round(statistics.fmean(r for _, r in reference), 4),
        "jit_first_round_acceptance": round(
            float(np.asarray(stats.acceptance_rate)[:args.num_prompts].mean()), 5),
        "repeats": args.repeats,
        "reference_repeats": args.reference_repeats,
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cpu_count": num_cores,
            "python": platform.python_version(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": f"{len(devices)} x {device_kind}",
        },
        "command": " ".join(["python", "scripts/bench_selection.py"] + sys.argv[1:]),
    }
    report_benchmark(result, args.output, sort_keys=False)


if __name__ == "__main__":
    main()
