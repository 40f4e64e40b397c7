"""Command-line converter among T5X checkpoints, HF safetensors and orbax parameter checkpoints.

  python -m rso_jax.weights.convert --from=t5x --input=checkpoint_1000000 --to=hf --output=hf_dir
  python -m rso_jax.weights.convert --from=hf --input=hf_dir --to=orbax --output=params_dir
  python -m rso_jax.weights.convert --from=orbax --input=params_dir --to=hf --output=hf_dir --dtype=bfloat16
  python -m rso_jax.weights.convert --from=orbax --input=WORK_DIR/preference/params --to=t5x --output=t5x

An experiment's trained policy is the orbax checkpoint WORK_DIR/preference/params (the
evaluation with the best proxy win rate on validation prompts; round r > 1 of an iterative run:
WORK_DIR/round_<r>/preference/params; the SFT policy: WORK_DIR/sft/params). A run prints these
paths when it ends.

--to=t5x writes a T5X model directory: --output/checkpoint_<step>/ (--step, default 0) with
T5X's msgpack file `checkpoint`, a TensorStore array per parameter, and a fresh (zero)
Adafactor state whose step counter is --step; pass --adafactor_momentum when the T5X run's
Adafactor sets beta1. T5X reads it as a model directory or by the checkpoint_<step> path
(--gin.CHECKPOINT_PATH for eval and infer, --gin.INITIAL_CHECKPOINT_PATH to fine-tune, where
TRAIN_STEPS counts the checkpoint's --step too).

A T5X checkpoint does not record `relative_attention_max_distance` (128 for every released T5)
or the dropout rate; pass --relative_attention_max_distance when it differs, on reading one,
and set the same model config in T5X's gin when writing one.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence

import numpy as np

from rso_jax import t5
from rso_jax.runtime import atomic_io
from rso_jax.weights import formats, hf, orbax_params, t5x, tree

WRITE_FORMATS = formats.FORMATS


def write(fmt: str, path: str, params: Any, config: t5.T5Config, *, step: int = 0,
          momentum: bool = False) -> str:
    """Writes `params` of `config` to the directory `path` (atomically) in format `fmt`.

    Args:
      fmt: one of WRITE_FORMATS.
      path: the directory to write; replaced as a whole.
      params: the parameter tree.
      config: the model config the parameters fit.
      step, momentum: for 't5x' only: the checkpoint's step and whether its Adafactor state
        keeps momentum (see `t5x.save`).

    Returns:
      what to read back: `path`, or for 't5x' the checkpoint directory `path/checkpoint_<step>`.
    """
    if fmt == "hf":
        hf.save(params, config, path)
    elif fmt == "orbax":
        orbax_params.save_params(params, config, path)
    elif fmt == "t5x":
        tree.check_against_config(params, config, "the parameters being saved")
        with atomic_io.directory(path) as temp_dir:
            t5x.save(params, temp_dir, step=step, momentum=momentum)
        return t5x.checkpoint_dir(path, step)
    else:
        raise ValueError(f"Unknown output format {fmt!r}; choose one of {WRITE_FORMATS}.")
    return path


def cast(params: Any, dtype: str) -> Any:
    import jax

    target = t5.resolve_dtype(dtype)
    return jax.tree_util.tree_map(lambda x: np.asarray(x).astype(target), params)


def check_output(path: str, overwrite: bool) -> None:
    """Refuses to replace a file, or a non-empty directory unless `overwrite`, before any work."""
    if os.path.isfile(path) or (os.path.exists(path) and not os.path.isdir(path)):
        raise ValueError(f"--output {path} is a file; the converter writes a directory and will "
                         "not replace a file. Choose another --output.")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise ValueError(f"--output {path} is a non-empty directory; pass --overwrite to replace "
                         "it, or choose another --output.")


def t5x_options(target_format: str, step: Optional[int], momentum: bool) -> dict[str, Any]:
    """`write`'s T5X options from the command line; refuses them for another output format."""
    if target_format != "t5x":
        given = [flag for flag, value in (("--step", step is not None),
                                          ("--adafactor_momentum", momentum)) if value]
        if given:
            raise ValueError(f"{' and '.join(given)} only apply to --to=t5x, not "
                             f"--to={target_format}; leave them out.")
        return {}
    step = 0 if step is None else step
    t5x.check_step(step)
    return {"step": step, "momentum": momentum}


def t5x_read_back_note(params: Any, config: t5.T5Config) -> Optional[str]:
    """A note for the user when a T5X checkpoint of `params` cannot carry all of `config`: it
    keeps no `relative_attention_max_distance`, so reading it back infers 128."""
    distance = config.relative_attention_max_distance
    inferred = t5x.config_from_shapes(tree.flat_shapes(params))
    inferred = inferred.relative_attention_max_distance
    if distance == inferred:
        return None
    return (f"note: a T5X checkpoint does not record relative_attention_max_distance; this "
            f"model's is {distance}, not {inferred}. Pass --relative_attention_max_distance="
            f"{distance} when converting it back, and set the same in T5X's gin.")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source_format", required=True, choices=formats.FORMATS)
    parser.add_argument("--input", required=True, help="checkpoint file or directory to read")
    parser.add_argument("--to", dest="target_format", required=True, choices=WRITE_FORMATS)
    parser.add_argument("--output", required=True, help="directory to write (atomically)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty --output directory")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="cast parameters before writing (default: keep)")
    parser.add_argument("--relative_attention_max_distance", type=int, default=None)
    parser.add_argument("--step", type=int, default=None,
                        help="--to=t5x: the checkpoint's step, written as "
                             "--output/checkpoint_<step>/ (default 0)")
    parser.add_argument("--adafactor_momentum", action="store_true",
                        help="--to=t5x: write Adafactor's momentum, for a T5X run that sets "
                             "its beta1")
    args = parser.parse_args(argv)
    try:
        options = t5x_options(args.target_format, args.step, args.adafactor_momentum)
        check_output(args.output, args.overwrite)
        params, config = formats.read(args.input, args.source_format,
                                      args.relative_attention_max_distance)
        if args.dtype:
            params = cast(params, args.dtype)
            config = config.replace(param_dtype=args.dtype)
        written = write(args.target_format, args.output, params, config, **options)
    except (FileNotFoundError, ValueError) as error:
        print(f"convert: {error}", file=sys.stderr)
        return 2
    count = sum(np.size(v) for v in tree.flatten(params).values())
    print(f"Wrote {args.target_format} parameters ({count:,} values, {config}) to {written}")
    note = t5x_read_back_note(params, config) if args.target_format == "t5x" else None
    if note:
        print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
