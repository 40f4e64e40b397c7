"""Command-line converter among T5X checkpoints, HF safetensors and orbax parameter checkpoints.

  python -m rso_jax.convert --from=t5x --input=checkpoint_1000000 --to=hf --output=hf_dir
  python -m rso_jax.convert --from=hf --input=hf_dir --to=orbax --output=params_dir
  python -m rso_jax.convert --from=orbax --input=params_dir --to=hf --output=hf_dir --dtype=bfloat16

T5X checkpoints are read only (writing one needs T5X's optimizer state). A T5X checkpoint
does not record `relative_attention_max_distance` (128 for every released T5) or the dropout
rate; pass --relative_attention_max_distance when it differs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence

import numpy as np

from rso_jax import checkpoints, hf_weights, t5, param_tree, t5x_checkpoint

READ_FORMATS = ("t5x", "hf", "orbax")
WRITE_FORMATS = ("hf", "orbax")


def read(fmt: str, path: str, relative_attention_max_distance: Optional[int] = None
         ) -> tuple[Any, t5.T5Config]:
    """Reads parameters (as numpy arrays) and their config from `path` in format `fmt`."""
    overrides = {}
    if relative_attention_max_distance is not None:
        overrides["relative_attention_max_distance"] = relative_attention_max_distance
    if fmt == "t5x":
        params = t5x_checkpoint.load_params(path)
        config = param_tree.infer_config(params, **overrides)
        param_tree.check_against_config(params, config, path)
        return params, config
    if fmt == "hf":
        return hf_weights.load(path, **overrides)
    if fmt == "orbax":
        config = checkpoints.load_config(path, t5.T5Config, **overrides)
        return jax_to_numpy(checkpoints.restore_params(path, config)), config
    raise ValueError(f"Unknown input format {fmt!r}; choose one of {READ_FORMATS}.")


def write(fmt: str, path: str, params: Any, config: t5.T5Config) -> None:
    if fmt == "hf":
        hf_weights.save(params, config, path)
    elif fmt == "orbax":
        checkpoints.save_params(params, config, path)
    else:
        raise ValueError(f"Unknown output format {fmt!r}; choose one of {WRITE_FORMATS}.")


def jax_to_numpy(params: Any) -> Any:
    import jax

    return jax.tree_util.tree_map(np.asarray, params)


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source_format", required=True, choices=READ_FORMATS)
    parser.add_argument("--input", required=True, help="checkpoint file or directory to read")
    parser.add_argument("--to", dest="target_format", required=True, choices=WRITE_FORMATS)
    parser.add_argument("--output", required=True, help="directory to write (atomically)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty --output directory")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="cast parameters before writing (default: keep)")
    parser.add_argument("--relative_attention_max_distance", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        check_output(args.output, args.overwrite)
        params, config = read(args.source_format, args.input, args.relative_attention_max_distance)
        if args.dtype:
            params = cast(params, args.dtype)
            config = config.replace(param_dtype=args.dtype)
        write(args.target_format, args.output, params, config)
    except (FileNotFoundError, ValueError) as error:
        print(f"convert: {error}", file=sys.stderr)
        return 2
    count = sum(np.size(v) for v in param_tree.flatten(params).values())
    print(f"Wrote {args.target_format} parameters ({count:,} values, {config}) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
