"""The jitted, mesh-sharded calls of the inference stages.

Every call goes through the partitioner: parameters sharded by the rule table, batches over
the 'data' axis, in fixed-size chunks (the last one zero-padded) so that one compiled shape
serves a whole stage. The same code runs on one CPU device, on a mesh of many devices and on a
mesh that spans several processes: each process feeds the rows of each chunk that its devices
hold, and every process gets the whole chunk's results back.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np

from rso_jax import t5, partitioning
from rso_jax.rewards import pairwise, pointwise
from rso_jax.sampling import decoding, scoring
from rso_jax.runtime import processes, stop_signals


def check_batch_size(name: str, batch_size: int, partitioner: partitioning.Partitioner) -> None:
    data = partitioner.mesh.shape["data"]
    if batch_size < 1 or batch_size % data:
        raise ValueError(f"{name}={batch_size} must be a positive multiple of the mesh's data "
                         f"axis ({data}), so that each chunk splits evenly over it.")


def map_chunks(fn: Callable[..., Any], arrays: Sequence[np.ndarray], batch_size: int,
               partitioner: partitioning.Partitioner) -> Any:
    """`fn(chunk_index, *chunks)` over fixed-size row slices of `arrays`, sharded over 'data';
    the rows of its (pytree) results are concatenated on the host. Before each chunk, a stop
    signal (Ctrl-C, SIGTERM) stops the stage (`stop_signals.stop_if_requested`)."""
    count = len(arrays[0])
    host_rows = partitioner.host_rows(batch_size)  # this process's rows of every chunk
    outputs = []
    for index, start in enumerate(range(0, count, batch_size)):
        stop_signals.stop_if_requested()  # no chunk in flight: its results are on the host
        chunks = []
        for array in arrays:
            chunk = array[start:start + batch_size]
            padded = np.zeros((batch_size,) + chunk.shape[1:], chunk.dtype)
            padded[: len(chunk)] = chunk
            chunks.append(padded[host_rows])
        rows = min(batch_size, count - start)
        out = processes.to_host(fn(index, *partitioner.shard_batch(tuple(chunks), batch_size)))
        outputs.append(jax.tree_util.tree_map(lambda x: x[:rows], out))
    if not outputs:
        raise ValueError("Nothing to run inference on (no rows).")
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outputs)


# The jitted functions of the stages, one per model and setting (`plan` compiles them ahead of
# time at abstract shapes).

@functools.lru_cache(maxsize=None)
def sampler(config, sampling, partitioner):
    return decoding.make_sampler(config, sampling, partitioner)


@functools.lru_cache(maxsize=None)
def sequence_scorer(config, partitioner, num_chunks=1):
    return scoring.make_scorer(config, partitioner, num_chunks)


@functools.lru_cache(maxsize=None)
def both_orders_scorer(score_fn, config, a_token, b_token, partitioner):
    """`score_fn(config, params, inputs_ab, inputs_ba, a_token=, b_token=)` jitted on the mesh."""
    fn = functools.partial(score_fn, config, a_token=a_token, b_token=b_token)
    batch = partitioner.batch_sharding(2)
    return partitioner.jit(fn, in_shardings=(partitioner.param_shardings(config), batch, batch),
                           out_shardings=partitioner.batch_sharding(1))


def sample(config: t5.T5Config, params: Any, prompts: np.ndarray,
           sampling: decoding.SamplingConfig, key: jax.Array, batch_size: int,
           partitioner: partitioning.Partitioner) -> decoding.SampleOutput:
    """N candidates per prompt; chunk i draws with `fold_in(key, i)`."""
    sample_fn = sampler(config, sampling, partitioner)
    return map_chunks(lambda index, chunk: sample_fn(params, chunk, jax.random.fold_in(key, index)),
                      [prompts], batch_size, partitioner)


def greedy(config: t5.T5Config, params: Any, prompts: np.ndarray,
           sampling: decoding.SamplingConfig, batch_size: int,
           partitioner: partitioning.Partitioner) -> np.ndarray:
    """Greedy decodes [prompts, length] under `sampling`'s length and EOS."""
    settings = dataclasses.replace(sampling, num_candidates=1, greedy=True)
    out = sample(config, params, prompts, settings, jax.random.PRNGKey(0), batch_size,
                 partitioner)
    return out.tokens[:, 0]


def sequence_logps(config: t5.T5Config, params: Any, prompts: np.ndarray,
                   responses: np.ndarray, batch_size: int,
                   partitioner: partitioning.Partitioner, num_chunks: int = 1) -> np.ndarray:
    """Teacher-forced log-probability of each response given its prompt, float32 [n]; each
    call of `batch_size` rows scores them in `num_chunks` chunks."""
    scorer = sequence_scorer(config, partitioner, num_chunks)
    return map_chunks(lambda _, p, r: scorer(params, p, r)[1], [prompts, responses], batch_size,
                      partitioner)


def rewards_vs_baseline(config: t5.T5Config, params: Any, ab_tokens: tuple[int, int],
                        inputs_candidate_first: np.ndarray, inputs_baseline_first: np.ndarray,
                        batch_size: int, partitioner: partitioning.Partitioner) -> np.ndarray:
    """Eq. 7 rewards logit P(candidate > baseline), both presentation orders averaged."""
    scorer = both_orders_scorer(pairwise.rewards_vs_baseline, config, *ab_tokens, partitioner)
    return map_chunks(lambda _, cb, bc: scorer(params, cb, bc),
                      [inputs_candidate_first, inputs_baseline_first], batch_size, partitioner)


@functools.lru_cache(maxsize=None)
def one_order_scorer(config, a_token, b_token, partitioner):
    """`pairwise.make_pair_scorer`, compiled once per model, tokens and mesh."""
    return pairwise.make_pair_scorer(config, a_token, b_token, partitioner)


def ordered_preference_probabilities(config: t5.T5Config, params: Any,
                                     ab_tokens: tuple[int, int], inputs: np.ndarray,
                                     batch_size: int, partitioner: partitioning.Partitioner
                                     ) -> np.ndarray:
    """P(A better) from a pairwise ranker for the responses in the order the inputs show
    them (no averaging over orders: what a judge says of one presentation)."""
    scorer = one_order_scorer(config, *ab_tokens, partitioner)
    return map_chunks(lambda _, x: scorer(params, x), [inputs], batch_size, partitioner)


def preference_probabilities(config: t5.T5Config, params: Any, ab_tokens: tuple[int, int],
                             inputs_first: np.ndarray, inputs_second: np.ndarray,
                             batch_size: int, partitioner: partitioning.Partitioner
                             ) -> np.ndarray:
    """P(first > second) from the pairwise ranker, both presentation orders averaged."""
    scorer = both_orders_scorer(pairwise.symmetric_preference_probability, config,
                                  *ab_tokens, partitioner)
    return map_chunks(lambda _, ab, ba: scorer(params, ab, ba), [inputs_first, inputs_second],
                      batch_size, partitioner)


@functools.lru_cache(maxsize=None)
def pointwise_scorer(config, partitioner):
    return pointwise.make_pointwise_scorer(config, partitioner)


def pointwise_rewards(config: t5.T5Config, params: Any, inputs: np.ndarray, batch_size: int,
                      partitioner: partitioning.Partitioner) -> np.ndarray:
    """R(x, y) of a pointwise reward model (T5 `config` with its scalar head), float32 [n]."""
    scorer = pointwise_scorer(config, partitioner)
    return map_chunks(lambda _, x: scorer(params, x), [inputs], batch_size, partitioner)
