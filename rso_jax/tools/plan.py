"""A memory plan: does an experiment fit a mesh of accelerators, and what is the smallest that does?

  python -m rso_jax.tools.plan --gin_file=configs/tldr_rso.gin --mesh=v4-8
  python -m rso_jax.tools.plan --gin_file=configs/rso_table3/tldr_rso_sample_rank.gin \\
      --mesh=8xh100-80gb --fsdp --output=plan.json

Each stage's jitted function (the preference train step, the sampler, the ranker's scorer, the
reference scorer) is lowered and compiled ahead of time at the experiment's shapes, with
abstract arguments (nothing is allocated), for a mesh of simulated CPU devices of the same
shape as the accelerator mesh. XLA's memory analysis then gives, per device, the bytes of the
arguments (parameters, optimizer state, the batch), the outputs, the part of the outputs that
reuses donated arguments, and the temporaries; its cost analysis gives the FLOPs of one call.
A function fits when arguments + outputs - reused + temporaries is at most the device's usable
memory. The smallest fitting mesh is then searched over powers of two with the same model
parallelism (and FSDP), the data axis taking the rest.

The arguments and outputs are exact (shapes and shardings fix them); the temporaries are what
XLA's CPU compiler plans, which fuses and schedules differently from the TPU and GPU compilers:
read them as an estimate and keep a margin (`--usable_fraction`). Gin files and bindings are
read as by `rso_jax.main`; macros left REQUIRED (checkpoints, data directories) get a
placeholder, since nothing is read (and a vocabulary left REQUIRED gives the models T5's 32,128
rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

import jax

from rso_jax import gin_macros, main as entry_point, partitioning
from rso_jax.runtime import atomic_io
from rso_jax.t5 import model_sizes
from rso_jax.tools.stage_functions import FUNCTION_FLAGS, STAGE_FUNCTIONS, StageFunction

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str
    memory_bytes: int  # per device (a TPU chip, a GPU)
    usable_fraction: float  # of memory_bytes that a JAX program gets by default
    cores_in_name: int = 1  # TPU v4 and v5p slice names count TensorCores, 2 per chip


ACCELERATORS = {
    "v4": Accelerator("TPU v4", 32 * GiB, 0.95, cores_in_name=2),
    "v5p": Accelerator("TPU v5p", 95 * GiB, 0.95, cores_in_name=2),
    "v5e": Accelerator("TPU v5e", 16 * GiB, 0.95),
    "v6e": Accelerator("TPU v6e", 32 * GiB, 0.95),
    # JAX preallocates 75% of a GPU's memory unless XLA_PYTHON_CLIENT_MEM_FRACTION says more.
    "a100-40gb": Accelerator("A100 40GB", 40 * GiB, 0.75),
    "a100-80gb": Accelerator("A100 80GB", 80 * GiB, 0.75),
    "h100-80gb": Accelerator("H100 80GB", 80 * GiB, 0.75),
    "h200": Accelerator("H200 141GB", 140 * GiB, 0.75),  # what the device reports
}


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    accelerator: Accelerator
    num_devices: int

    def describe(self) -> str:
        return f"{self.num_devices} x {self.accelerator.name}"


def parse_mesh(text: str) -> MeshSpec:
    """'v4-8' (a TPU slice by its name: 4 v4 chips), 'v5e-16', '8xh100-80gb', 'h100-80gb'."""
    value = text.strip().lower()
    match = re.fullmatch(r"(?:(\d+)x)?([a-z0-9-]+?)(?:-(\d+))?", value)
    kinds = ", ".join(sorted(ACCELERATORS))
    if match:
        count, kind, slice_size = match.groups()
        if kind not in ACCELERATORS and slice_size and f"{kind}-{slice_size}" in ACCELERATORS:
            kind, slice_size = f"{kind}-{slice_size}", None
        accelerator = ACCELERATORS.get(kind)
        if accelerator is not None and not (count and slice_size):
            if slice_size:
                cores = int(slice_size)
                if accelerator.cores_in_name > 1 and cores % accelerator.cores_in_name:
                    raise ValueError(f"--mesh={text}: a {accelerator.name} slice name counts "
                                     f"{accelerator.cores_in_name} cores per chip.")
                return MeshSpec(accelerator, cores // accelerator.cores_in_name)
            if count is not None and int(count) < 1:
                raise ValueError(f"--mesh={text}: a mesh needs at least one device.")
            return MeshSpec(accelerator, int(count or 1))
    raise ValueError(f"--mesh={text} is not a mesh: write a TPU slice ('v4-8', 'v5e-16') or "
                     f"N x a device ('8xh100-80gb'); the kinds are {kinds}.")


# ---------------------------------------------------------------------------------------------
# Compiling and measuring.

def memory_figures(compiled: Any) -> dict:
    """Per-device bytes from XLA's memory analysis and FLOPs from its cost analysis."""
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per device program
        cost = cost[0] if cost else {}
    figures = {"argument_bytes": int(memory.argument_size_in_bytes),
               "output_bytes": int(memory.output_size_in_bytes),
               "reused_bytes": int(memory.alias_size_in_bytes),
               "temporary_bytes": int(memory.temp_size_in_bytes)}
    figures["peak_bytes"] = (figures["argument_bytes"] + figures["output_bytes"]
                             - figures["reused_bytes"] + figures["temporary_bytes"])
    figures["flops"] = float((cost or {}).get("flops", 0.0))
    return figures


def compile_on(function: StageFunction, num_devices: int, model_parallelism: int,
               fsdp: bool) -> dict:
    """The function compiled for a (data, model) mesh of `num_devices` simulated devices;
    figures, or why it cannot be laid out on that mesh."""


    model = model_parallelism
    if model < 1 or num_devices % model:
        return {"devices": num_devices, "data": None, "model": model, "fsdp": fsdp,
                "error": f"model parallelism {model} does not divide {num_devices} devices"}
    data = num_devices // model
    layout = {"devices": num_devices, "data": data, "model": model, "fsdp": fsdp}
    if function.rows % data:
        return {**layout, "error": f"{function.rows} rows do not split over data={data}"}
    mesh = partitioning.create_mesh(data, model, devices=jax.devices()[:num_devices])
    partitioner = partitioning.Partitioner(mesh, partitioning.logical_axis_rules(fsdp))
    try:
        partitioner.param_shardings(function.model)
    except ValueError as error:
        return {**layout, "error": str(error).splitlines()[0]}
    return {**layout, **memory_figures(function.lower(partitioner).compile())}


def fits(figures: dict, mesh: MeshSpec) -> bool:
    usable = mesh.accelerator.memory_bytes * mesh.accelerator.usable_fraction
    return "error" not in figures and figures["peak_bytes"] <= usable


def plan_function(function: StageFunction, mesh: MeshSpec, model_parallelism: int, fsdp: bool,
                  max_devices: int) -> dict:
    """The figures on `mesh`, and the smallest power-of-two mesh (up to `max_devices`) of the
    same accelerator that fits, searched down from a fitting mesh or up from one that does
    not."""
    row = {"function": function.name, "shapes": function.shapes,
           "on_mesh": compile_on(function, mesh.num_devices, model_parallelism, fsdp)}
    row["fits"] = fits(row["on_mesh"], mesh)
    sizes = [2 ** k for k in range(max_devices.bit_length()) if 2 ** k <= max_devices]
    tried = {mesh.num_devices: row["on_mesh"]}

    def fitting(n):
        if n not in tried:
            tried[n] = compile_on(function, n, model_parallelism, fsdp)
        return fits(tried[n], dataclasses.replace(mesh, num_devices=n))

    smallest = None
    if row["fits"]:
        smallest = mesh.num_devices
        for n in reversed([s for s in sizes if s < mesh.num_devices]):
            if not fitting(n):
                break
            smallest = n
    elif "error" in row["on_mesh"]:  # not a layout of this experiment: try every size
        smallest = next((n for n in sizes if fitting(n)), None)
    else:  # out of memory: only larger meshes can fit
        smallest = next((n for n in sizes if n > mesh.num_devices and fitting(n)), None)
    row["smallest_fitting_devices"] = smallest
    row["tried"] = [tried[n] for n in sorted(tried)]
    return row


def make_plan(experiment: Any, mesh: MeshSpec, model_parallelism: int, fsdp: bool,
              max_devices: int, functions: Sequence[Callable] = STAGE_FUNCTIONS) -> dict:

    if jax.device_count() < max(mesh.num_devices, max_devices):
        raise ValueError(f"The plan needs {max(mesh.num_devices, max_devices)} simulated "
                         f"devices but JAX has {jax.device_count()}; run it as "
                         "`python -m rso_jax.tools.plan` (which sets XLA_FLAGS before JAX starts).")
    return {"mesh": mesh.describe(), "accelerator": dataclasses.asdict(mesh.accelerator),
            "usable_bytes_per_device": int(mesh.accelerator.memory_bytes
                                           * mesh.accelerator.usable_fraction),
            "model_parallelism": model_parallelism, "fsdp": fsdp,
            "functions": [plan_function(make(experiment), mesh, model_parallelism, fsdp,
                                        max_devices) for make in functions]}


def _gib(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


def markdown_table(plan: dict) -> str:
    lines = [f"Mesh: {plan['mesh']} (usable {_gib(plan['usable_bytes_per_device'])} GiB per "
             f"device), model parallelism {plan['model_parallelism']}, FSDP {plan['fsdp']}.", "",
             "| function | shapes | mesh (data x model) | arguments GiB | outputs GiB | reused "
             "GiB | temporaries GiB | peak GiB | fits | TFLOP per call per device | smallest "
             "fitting mesh |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for row in plan["functions"]:
        on = row["on_mesh"]
        smallest = row["smallest_fitting_devices"]
        fitting = next((t for t in row["tried"] if t["devices"] == smallest), None)
        smallest_text = (f"{smallest} ({fitting['data']} x {fitting['model']})" if fitting
                         else "none tried fits")
        if "error" in on:
            lines.append(f"| {row['function']} | {row['shapes']} | {on['devices']} devices "
                         f"| {on['error']} | | | | | no | | {smallest_text} |")
            continue
        lines.append(
            f"| {row['function']} | {row['shapes']} | {on['data']} x {on['model']} | "
            f"{_gib(on['argument_bytes'])} | {_gib(on['output_bytes'])} | "
            f"{_gib(on['reused_bytes'])} | {_gib(on['temporary_bytes'])} | "
            f"{_gib(on['peak_bytes'])} | {'yes' if row['fits'] else 'no'} | "
            f"{on['flops'] / 1e12:.2f} | {smallest_text} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The command.

def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rso_jax.tools.plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gin_file", action="append", default=[],
                        help="the experiment's gin files, as for rso_jax.main")
    parser.add_argument("--mesh", required=True,
                        help="'v4-8', 'v5e-16', '8xh100-80gb', ... (kinds: "
                             + ", ".join(sorted(ACCELERATORS)) + ")")
    parser.add_argument("--model_parallelism", type=int, default=None,
                        help="default: the experiment's MODEL_PARALLELISM")
    parser.add_argument("--fsdp", action=argparse.BooleanOptionalAction, default=None,
                        help="default: the experiment's FSDP")
    parser.add_argument("--max_devices", type=int, default=64,
                        help="largest mesh tried for the smallest fitting one")
    parser.add_argument("--usable_fraction", type=float, default=None,
                        help="of each device's memory the program may use (default: the "
                             "accelerator's, e.g. 0.75 on GPUs as JAX preallocates)")
    parser.add_argument("--functions", default=",".join(FUNCTION_FLAGS),
                        help="which of them to plan, comma-separated (default: all)")
    parser.add_argument("--output", default=None, help="also write the plan as JSON here")
    return parser


def build_experiment(gin_files: Sequence[str], bindings: Sequence[str]) -> Any:
    """The experiment of the gin files and bindings, REQUIRED macros given placeholders (gin
    is left configured: `main` reads its macros)."""

    def placeholders(required: list) -> list:
        bindings = [f"{name} = 'not read by the plan'" for name in required]
        derived = "padded_vocab_size" in repr(gin_macros.macro_values().get("VOCAB_SIZE"))
        if "VOCABULARY_FILE" in required and derived:
            # No vocabulary to derive the rows from: T5's (the paper's models).
            bindings.append(f"VOCAB_SIZE = {model_sizes.T5_VOCAB_SIZE}")
        return bindings
    return entry_point.experiment_from_gin(gin_files, bindings, fill_required=placeholders)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _argument_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        mesh = parse_mesh(args.mesh)
    except ValueError as error:
        parser.error(str(error))
    if args.usable_fraction is not None:
        if not 0 < args.usable_fraction <= 1:
            parser.error(f"--usable_fraction={args.usable_fraction} must be in (0, 1].")
        mesh = dataclasses.replace(mesh, accelerator=dataclasses.replace(
            mesh.accelerator, usable_fraction=args.usable_fraction))
    names = [name.strip() for name in args.functions.split(",") if name.strip()]
    unknown = [name for name in names if name not in FUNCTION_FLAGS]
    if unknown or not names:
        parser.error(f"--functions={args.functions}: choose among {', '.join(FUNCTION_FLAGS)}.")
    devices = max(mesh.num_devices, args.max_devices)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={devices}").strip()
    os.environ["JAX_PLATFORMS"] = "cpu"  # the simulated mesh, whatever this machine has

    gin_files, bindings = entry_point.parse_flags(
        [f"--gin_file={f}" for f in args.gin_file] + rest)
    try:
        experiment = build_experiment(gin_files, bindings)
    except (entry_point.GinConfigError, ValueError) as error:
        print(f"rso_jax.tools.plan: {error}", file=sys.stderr)
        return 2
    macros = gin_macros.macro_values()
    model_parallelism = (args.model_parallelism if args.model_parallelism is not None
                         else int(macros.get("MODEL_PARALLELISM") or 1))
    fsdp = args.fsdp if args.fsdp is not None else bool(macros.get("FSDP"))
    plan = make_plan(experiment, mesh, model_parallelism, fsdp, args.max_devices,
                     [FUNCTION_FLAGS[name] for name in names])
    plan["gin_files"], plan["bindings"] = list(gin_files), list(bindings)
    print(markdown_table(plan))
    if args.output:
        atomic_io.write_json(args.output, plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
