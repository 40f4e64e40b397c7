"""Sample: N candidates per train prompt from the SFT policy (in later rounds, the previous
round's policy), and one more random decode per prompt of the SFT policy as the eq. 7 baseline.
The prompts are the training task's, or SAMPLE_TASK's (RSO Table 6)."""

from __future__ import annotations

import dataclasses
import time

import jax

from rso_jax.experiment.context import StageContext
from rso_jax.experiment import described_settings as described
from rso_jax.experiment.stage import POLICY, Stage

SAMPLES_FILE = "samples.npz"


def sample_prompts(context: StageContext) -> list:
    """The train examples whose candidates are sampled (the first NUM_SAMPLE_PROMPTS)."""
    return list(context.experiment.sampling_task.sft_examples("train")[
        : context.experiment.num_sample_prompts])


def run(context: StageContext) -> dict:
    experiment = context.experiment
    params = context.stage_params(context.previous_policy)
    prompts = context.encode_prompts([e.prompt for e in sample_prompts(context)])
    key = context.random_key(experiment.seed)
    start = time.perf_counter()
    out = context.sample(params, prompts, experiment.sampling, jax.random.fold_in(key, 0))
    elapsed = time.perf_counter() - start
    context.decode_checked(out.tokens, "the sampled candidates")
    sft_params = params if context.previous_policy == "sft" else context.params("sft")
    baseline = context.sample(sft_params, prompts,
                              dataclasses.replace(experiment.sampling, num_candidates=1),
                              jax.random.fold_in(key, 1))
    context.save_arrays("sample", SAMPLES_FILE, prompts=prompts, tokens=out.tokens,
                        token_logps=out.token_logps, lengths=out.lengths,
                        baseline=baseline.tokens[:, 0])
    return {"policy": context.previous_policy, "prompts": len(prompts), "candidates_per_prompt": experiment.sampling.num_candidates,
            "sampling_seconds": round(elapsed, 2)}


def settings(e) -> dict:
    return {"task": described.describe(e.task), "sampling": described.sampling(e),
            **described.unless_default(sample_task=described.describe(e.sample_task)),
            "num_sample_prompts": e.num_sample_prompts, "prompt_length": e.lengths.prompt,
            "sample_batch_size": e.inference_batch_sizes.sample, "seed": e.seed}


STAGE = Stage("sample", run, settings, reads=lambda e: (POLICY, "sft"),
              task_data=lambda e: ((e.sampling_task.sft_examples, "train"),))
