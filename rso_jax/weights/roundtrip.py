"""A T5X checkpoint through every weight format and back, scored on the device mesh.

Reads a T5X checkpoint, writes it as HF safetensors and as an orbax parameter checkpoint,
reads both back (the orbax one directly onto the mesh), checks every array is bit-identical,
and scores a padded batch of prompt/target token sequences with each copy.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import numpy as np

from rso_jax import partitioning, t5
from rso_jax.data import vocabularies
from rso_jax.sampling import scoring
from rso_jax.runtime import processes, run_info
from rso_jax.weights import formats, hf, orbax_params, t5x, tree


def random_token_batch(rng: np.random.Generator, *, num_prompts: int, targets_per_prompt: int,
                       prompt_length: int, target_length: int, vocab_size: int,
                       eos_id: int = vocabularies.EOS_ID) -> tuple[np.ndarray, np.ndarray]:
    """Prompts and targets of random lengths, each ending in EOS and right-padded with 0."""
    def sequences(count, length):
        tokens = np.zeros((count, length), np.int32)
        for row, size in enumerate(rng.integers(2, length + 1, size=count)):
            tokens[row, : size - 1] = rng.integers(2, vocab_size, size=size - 1)
            tokens[row, size - 1] = eos_id
        return tokens
    return (sequences(num_prompts, prompt_length),
            sequences(num_prompts * targets_per_prompt, target_length))


def run_checkpoint_roundtrip(checkpoint_path: str, work_dir: str, *, num_prompts: int = 4,
                             targets_per_prompt: int = 2, prompt_length: int = 32,
                             target_length: int = 16, seed: int = 0,
                             partitioner: Optional[partitioning.Partitioner] = None
                             ) -> dict[str, Any]:
    """Runs the round trip and writes `results.json` and the gin config into `work_dir`.

    Returns:
      the results dict (also printed as a table).

    Raises:
      FileNotFoundError: the checkpoint does not exist.
      RuntimeError: a re-imported copy differs from the original.
    """
    t5x.resolve_path(checkpoint_path)  # fail before any work if it is missing
    partitioner = partitioner or partitioning.create_partitioner()
    hf_dir, orbax_dir = os.path.join(work_dir, "hf"), os.path.join(work_dir, "orbax")
    params, config, copies, timings = _copies(checkpoint_path, hf_dir, orbax_dir, partitioner)
    flat = tree.flatten(params)
    _check_identical(flat, config, copies)
    data_size = partitioner.mesh.shape["data"]
    prompts, targets = random_token_batch(
        np.random.default_rng(seed),
        num_prompts=-(-num_prompts // data_size) * data_size,  # whole prompts on each shard
        targets_per_prompt=targets_per_prompt, prompt_length=prompt_length,
        target_length=target_length, vocab_size=config.vocab_size)
    sequence_logps = _sequence_logps(
        {"t5x": partitioner.shard_params(params, config),
         "hf": partitioner.shard_params(copies["hf"][0], config), "orbax": copies["orbax"][0]},
        config, prompts, targets, partitioner)
    max_difference = max(float(np.abs(sequence_logps[name] - sequence_logps["t5x"]).max())
                         for name in sequence_logps)

    results = {
        "checkpoint": os.path.abspath(checkpoint_path),
        "model_config": config.to_json(),
        "num_parameters": int(sum(np.size(v) for v in flat.values())),
        "mesh": {axis: int(size) for axis, size in partitioner.mesh.shape.items()},
        "hf_dir": os.path.abspath(hf_dir),
        "orbax_dir": os.path.abspath(orbax_dir),
        "arrays_identical": True,
        "sequence_logps": {name: values.round(6).tolist() for name, values in sequence_logps.items()},
        "max_sequence_logp_difference": max_difference,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    run_info.write_result(work_dir, "results.json", results)
    print(format_table(results))
    return results


def _copies(checkpoint_path: str, hf_dir: str, orbax_dir: str,
            partitioner: partitioning.Partitioner) -> tuple:
    """Reads the T5X checkpoint, writes it as HF and orbax, and reads both back (the orbax
    copy straight onto the mesh). Returns (params, config, {'hf'|'orbax': (params, config)},
    timings)."""
    timings = {}
    start = time.perf_counter()
    params, config = formats.read(checkpoint_path, "t5x")
    timings["read_t5x_s"] = time.perf_counter() - start
    start = time.perf_counter()
    hf.save(params, config, hf_dir)
    hf_copy = formats.read(hf_dir, "hf")
    timings["hf_write_read_s"] = time.perf_counter() - start
    start = time.perf_counter()
    orbax_params.save_params(params, config, orbax_dir)
    orbax_copy = (orbax_params.restore_params(orbax_dir, config, partitioner.param_shardings(config)),
                  orbax_params.load_config(orbax_dir, t5.T5Config))
    timings["orbax_write_read_s"] = time.perf_counter() - start
    return params, config, {"hf": hf_copy, "orbax": orbax_copy}, timings


def _check_identical(flat: dict[str, Any], config: t5.T5Config, copies: dict) -> None:
    """Raises RuntimeError unless every copy has the original's arrays and config."""
    differing = [key for copy, _ in copies.values() for key, value in tree.flatten(copy).items()
                 if not np.array_equal(processes.to_host(value), flat[key])]
    configs = [copy_config for _, copy_config in copies.values()]
    if differing or any(copy_config != config for copy_config in configs):
        raise RuntimeError(f"Round trip changed the model: arrays {differing[:10]}, configs "
                           f"{configs} vs {config}.")


def _sequence_logps(copies: dict[str, Any], config: t5.T5Config, prompts: np.ndarray,
                    targets: np.ndarray, partitioner: partitioning.Partitioner
                    ) -> dict[str, np.ndarray]:
    """Each copy's log-likelihood of every target, scored on the mesh."""
    score = scoring.make_scorer(config, partitioner)
    # This process's rows of each (all of them, with one process); a prompt's targets are
    # consecutive rows, so they land on the prompt's data shard.
    sharded_batch = tuple(partitioner.shard_batch(array[partitioner.host_rows(len(array))],
                                                  len(array)) for array in (prompts, targets))
    return {name: processes.to_host(score(params, *sharded_batch)[1])
            for name, params in copies.items()}


def format_table(results: dict[str, Any]) -> str:
    lines = [f"Checkpoint round trip of {results['checkpoint']}",
             f"  {results['num_parameters']:,} parameters, mesh {results['mesh']}",
             f"  T5X -> HF safetensors ({results['hf_dir']}) -> params: identical",
             f"  T5X -> orbax ({results['orbax_dir']}) -> params on mesh: identical",
             "",
             "| target | log p (T5X) | log p (HF copy) | log p (orbax copy) |",
             "|---:|---:|---:|---:|"]
    logps = results["sequence_logps"]
    for index, value in enumerate(logps["t5x"]):
        lines.append(f"| {index} | {value:.4f} | {logps['hf'][index]:.4f} | "
                     f"{logps['orbax'][index]:.4f} |")
    lines.append(f"\nLargest difference between copies: {results['max_sequence_logp_difference']:.2e}")
    return "\n".join(lines)
