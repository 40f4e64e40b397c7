"""Sampling throughput: our jitted sampler against HF transformers' generate on the same weights.

  python scripts/bench_sampling.py --size=small --num_prompts=8 --num_candidates=16 \
      --prompt_length=128 --new_tokens=32 --dtype=float32

Every candidate decodes exactly --new_tokens tokens (EOS is disabled on both sides), so both
sides do the same work. Compile time is excluded: each side runs once to warm up, then
--repeats timed rounds run ours and HF's alternately (so a machine whose speed drifts slows
both alike), and each side's best is reported. Prints one JSON line and writes it to --output.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rso_jax import t5  # noqa: E402
from rso_jax.t5 import model_sizes
from rso_jax.sampling import decoding
from rso_jax.runtime import cpu_tuning
from rso_jax.weights import hf  # noqa: E402
from rso_jax.runtime.run_info import machine_description, report_benchmark  # noqa: E402

NEVER = -1  # an EOS id no token can equal: every candidate runs the full length


def random_prompts(num_prompts: int, length: int, vocab_size: int, seed: int) -> np.ndarray:
    prompts = np.random.default_rng(seed).integers(2, vocab_size, size=(num_prompts, length))
    prompts[:, -1] = 1
    return prompts.astype(np.int32)


def our_sampler_run(config, params, prompts, sampling):
    """A function running our sampler once on the prompts (to completion)."""
    sampler = decoding.make_sampler(config, sampling)
    key = jax.random.PRNGKey(0)

    def run():
        out = jax.block_until_ready(sampler(params, prompts, key))
        assert int(np.asarray(out.lengths).min()) == sampling.max_decode_length
    return run


def hf_generate_run(config, params, prompts, args):
    """A function running HF transformers' generate once on the same weights and prompts."""
    import torch
    import transformers

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as directory:
        hf.save(jax.device_get(params), config.replace(param_dtype="float32"), directory)
        model = transformers.T5ForConditionalGeneration.from_pretrained(
            directory, dtype=torch_dtype).to(device).eval()
    input_ids = torch.tensor(prompts, dtype=torch.long, device=device)

    def run():
        with torch.no_grad():
            output = model.generate(input_ids=input_ids, attention_mask=input_ids > 0,
                                    do_sample=True, num_return_sequences=args.num_candidates,
                                    temperature=args.temperature, top_k=args.top_k,
                                    max_new_tokens=args.new_tokens,
                                    min_new_tokens=args.new_tokens)
        if device == "cuda":
            torch.cuda.synchronize()
        assert output.shape == (len(prompts) * args.num_candidates, args.new_tokens + 1)
    return run


def time_alternately(runs: dict, repeats: int) -> tuple[dict, dict]:
    """(best seconds, first-call seconds) per named run; timed rounds alternate the runs."""
    first, best = {}, {}
    for name, run in runs.items():
        start = time.perf_counter()
        run()  # warm-up: compilation (ours), allocator and thread pools (HF)
        first[name] = time.perf_counter() - start
        best[name] = float("inf")
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, first


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=model_sizes.SIZES)
    parser.add_argument("--num_prompts", type=int, default=8)
    parser.add_argument("--num_candidates", type=int, default=16)
    parser.add_argument("--prompt_length", type=int, default=128)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top_k", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (each side once)")
    parser.add_argument("--skip_hf", action="store_true", help="only time our sampler")
    parser.add_argument("--output", default="bench_results/bench_sampling.json")
    parser.add_argument("--no_cpu_tuning", action="store_true",
                        help="leave XLA:CPU's YNNPACK fusions as they are "
                             "(rso_jax.runtime.cpu_tuning)")
    args = parser.parse_args(argv)
    if not args.no_cpu_tuning:
        cpu_tuning.restrict_ynnpack_to_dots()  # what rso_jax.main does

    config = model_sizes.model_config(args.size, dtype=args.dtype, param_dtype=args.dtype)
    params = t5.init_params(config, jax.random.PRNGKey(0))
    prompts = random_prompts(args.num_prompts, args.prompt_length, config.vocab_size, seed=0)
    sampling = decoding.SamplingConfig(num_candidates=args.num_candidates,
                                       max_decode_length=args.new_tokens,
                                       temperature=args.temperature, top_k=args.top_k,
                                       eos_id=NEVER)
    candidate_tokens = args.num_prompts * args.num_candidates * args.new_tokens
    runs = {"ours": our_sampler_run(config, params, prompts, sampling)}
    if not args.skip_hf:
        runs["hf"] = hf_generate_run(config, params, prompts, args)
    best, first = time_alternately(runs, args.repeats)
    ours_s, compile_s = best["ours"], first["ours"] - best["ours"]
    result = {
        "benchmark": "sampling", "size": args.size, "dtype": args.dtype,
        "num_prompts": args.num_prompts, "num_candidates": args.num_candidates,
        "prompt_length": args.prompt_length, "new_tokens": args.new_tokens,
        "temperature": args.temperature, "top_k": args.top_k,
        "seconds": round(ours_s, 4), "compile_seconds": round(compile_s, 2),
        "candidate_tokens_per_s": round(candidate_tokens / ours_s, 1),
        "prompts_per_s": round(args.num_prompts / ours_s, 3),
        "machine": machine_description(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    if not args.skip_hf:
        hf_s = best["hf"]
        import transformers
        result.update({"hf_seconds": round(hf_s, 4),
                       "hf_candidate_tokens_per_s": round(candidate_tokens / hf_s, 1),
                       "speedup_vs_hf": round(hf_s / ours_s, 2),
                       "transformers": transformers.__version__})
    report_benchmark(result, args.output)
    return result


if __name__ == "__main__":
    main()
