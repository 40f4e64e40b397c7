"""Preference-step throughput and MFU, against a PyTorch DPO step in the usual style.

  python scripts/bench_train.py --size=small --pairs=4 --prompt_length=256 --response_length=32

Ours: one jitted step (sigmoid-norm loss, Adafactor) that encodes each prompt once for its
chosen and rejected responses and reads reference log-probs computed once beforehand.
PyTorch (same weights, same sizes): HF T5ForConditionalGeneration run separately on chosen and
on rejected (two encoder passes), a live frozen reference model (two more), DPO loss,
backward, transformers' Adafactor. Compile time is excluded; each side runs warm-up steps,
then --steps timed steps. Prints one JSON line and writes it to --output.

MFU counts the matmul and attention FLOPs our step needs (one encoder pass and two decoder
passes per pair, forward and backward = 3x forward) against the device's peak: given with
--peak_tflops, or known for H100/H200 (989 dense bf16 TFLOP/s); null on an unknown CPU.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rso_jax import partitioning, t5  # noqa: E402
from rso_jax.t5 import model_sizes
from rso_jax.data import batching
from rso_jax.training import optimizers, train_steps
from rso_jax.sampling import scoring
from rso_jax.runtime import cpu_tuning
from rso_jax.weights import hf  # noqa: E402
from rso_jax.runtime.run_info import machine_description, report_benchmark  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}


def step_flops(config: t5.T5Config, pairs: int, prompt_length: int,
               response_length: int) -> float:
    """Training FLOPs (3x forward) of our preference step on `pairs` pairs."""
    e, hd, f, v = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim, config.vocab_size
    mlp = 2 * len(config.mlp_activations) * e * f + 2 * f * e
    s, t = prompt_length, response_length
    encoder_token = config.num_encoder_layers * (2 * 4 * e * hd + mlp + 2 * 2 * s * hd)
    cross_kv_token = config.num_decoder_layers * 2 * 2 * e * hd  # once per prompt token
    decoder_token = (config.num_decoder_layers * (2 * 4 * e * hd + 2 * 2 * e * hd + mlp
                                                  + 2 * 2 * t * hd + 2 * 2 * s * hd)
                     + 2 * e * v)
    forward = pairs * (s * (encoder_token + cross_kv_token) + 2 * t * decoder_token)
    return 3.0 * forward


def random_batch(config, pairs, prompt_length, response_length, seed=0):
    rng = np.random.default_rng(seed)
    def tokens(n, length):
        out = rng.integers(2, config.vocab_size, size=(n, length)).astype(np.int32)
        out[:, -1] = 1
        return out
    return tokens(pairs, prompt_length), tokens(pairs, response_length), tokens(pairs, response_length)


def bench_ours(config, params, prompts, chosen, rejected, args):
    partitioner = partitioning.create_partitioner()
    score = scoring.make_scorer(config, partitioner)
    sharded_params = partitioner.shard_params(jax.device_get(params), config)
    reference_chosen = score(sharded_params, prompts, chosen)[1]  # once, for the dataset
    reference_rejected = score(sharded_params, prompts, rejected)[1]
    batch = batching.preference_batch_from_tokens(
        prompts, chosen, rejected, reference_chosen_logps=np.asarray(reference_chosen),
        reference_rejected_logps=np.asarray(reference_rejected))
    optimizer = optimizers.adafactor(learning_rate=1e-5)
    loss_fn = functools.partial(train_steps.preference_loss, model_config=config,
                                loss_name="sigmoid_norm", gamma=0.05)
    step = train_steps.make_train_step(partitioner, config, optimizer, loss_fn, batch)
    state = train_steps.place_state(partitioner, config, optimizer, sharded_params,
                                 jax.random.PRNGKey(0))
    batch = partitioner.shard_batch(batch)
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup - 1):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / args.steps, compile_s, float(metrics["loss"])


def bench_torch(config, params, prompts, chosen, rejected, args):
    import torch
    import transformers
    from transformers.optimization import Adafactor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    with tempfile.TemporaryDirectory() as directory:
        hf.save(jax.device_get(params), config.replace(param_dtype="float32"), directory)
        policy = transformers.T5ForConditionalGeneration.from_pretrained(
            directory, dtype=dtype).to(device)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    policy.train()
    optimizer = Adafactor(policy.parameters(), lr=1e-5, scale_parameter=False,
                          relative_step=False, warmup_init=False, clip_threshold=1.0,
                          decay_rate=-0.8)
    input_ids = torch.tensor(prompts, dtype=torch.long, device=device)
    attention_mask = input_ids > 0
    labels = {name: torch.tensor(x, dtype=torch.long, device=device)
              for name, x in (("chosen", chosen), ("rejected", rejected))}

    def sequence_logps(model, target):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, labels=target).logits
        logps = torch.log_softmax(logits.float(), dim=-1)
        return logps.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1)

    def step():
        policy_chosen = sequence_logps(policy, labels["chosen"])
        policy_rejected = sequence_logps(policy, labels["rejected"])
        with torch.no_grad():
            reference_chosen = sequence_logps(reference, labels["chosen"])
            reference_rejected = sequence_logps(reference, labels["rejected"])
        margin = 0.05 * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    return (time.perf_counter() - start) / args.steps, loss


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=model_sizes.SIZES)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--prompt_length", type=int, default=256)
    parser.add_argument("--response_length", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="compute dtype (parameters stay float32 master weights)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--peak_tflops", type=float, default=None)
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument("--output", default="bench_results/bench_train.json")
    parser.add_argument("--no_cpu_tuning", action="store_true",
                        help="leave XLA:CPU's YNNPACK fusions as they are "
                             "(rso_jax.runtime.cpu_tuning)")
    args = parser.parse_args(argv)
    if not args.no_cpu_tuning:
        cpu_tuning.restrict_ynnpack_to_dots()  # what rso_jax.main does

    config = model_sizes.model_config(args.size, dtype=args.dtype, param_dtype="float32")
    params = t5.init_params(config, jax.random.PRNGKey(0))
    prompts, chosen, rejected = random_batch(config, args.pairs, args.prompt_length,
                                             args.response_length)
    seconds, compile_s, loss = bench_ours(config, params, prompts, chosen, rejected, args)
    flops = step_flops(config, args.pairs, args.prompt_length, args.response_length)
    device_kind = jax.devices()[0].device_kind
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_kind),
                                    None)
    achieved_tflops = flops / seconds / 1e12
    result = {
        "benchmark": "preference_train_step", "size": args.size, "dtype": args.dtype,
        "pairs": args.pairs, "prompt_length": args.prompt_length,
        "response_length": args.response_length, "seconds_per_step": round(seconds, 4),
        "compile_seconds": round(compile_s, 2), "pairs_per_s": round(args.pairs / seconds, 3),
        "model_tflops_per_step": round(flops / 1e12, 4),
        "achieved_tflops": round(achieved_tflops, 4),
        "mfu": None if peak is None else round(achieved_tflops / peak, 4),
        "peak_tflops": peak, "loss": round(loss, 5), "machine": machine_description(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    if not args.skip_torch:
        import torch
        import transformers
        torch_seconds, torch_loss = bench_torch(config, params, prompts, chosen, rejected, args)
        result.update({"torch_seconds_per_step": round(torch_seconds, 4),
                       "torch_pairs_per_s": round(args.pairs / torch_seconds, 3),
                       "speedup_vs_torch": round(torch_seconds / seconds, 2),
                       "torch_loss": round(torch_loss, 5), "torch": torch.__version__,
                       "transformers": transformers.__version__})
    report_benchmark(result, args.output)
    return result


if __name__ == "__main__":
    main()
