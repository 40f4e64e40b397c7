"""Device mesh, the one table of logical-axis rules, and jit with shardings.

Every parameter and main activation of the network names its dimensions logically
('batch', 'embed', 'heads', ...). `logical_axis_rules` maps those names onto the two mesh
axes, 'data' and 'model'. A `Partitioner` holds a mesh and the rules and turns logical
specs into `NamedSharding`s for any tree (`shardings_for`; `param_shardings` for a model's
`model_spec.ModelSpec`), initialises parameters directly into their shards
(`jax.eval_shape` -> shardings -> jit with `out_shardings`) and jits functions with input and
output shardings while the rules are active, so that the model's logical constraints apply.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rso_jax import model_spec
from rso_jax.runtime import processes
from rso_jax.weights import tree

logger = logging.getLogger(__name__)

MESH_AXES = ("data", "model")

LogicalRules = tuple[tuple[str, Optional[str]], ...]


def logical_axis_rules(fsdp: bool = False) -> LogicalRules:
    """The rule table: logical axis name -> mesh axis (None = replicated).

    Rules are applied in order and a mesh axis is used at most once per array, so an
    activation [batch, length, embed] shards 'batch' over 'data' and, with FSDP, parameters
    [embed, mlp] shard 'embed' over 'data' and 'mlp' over 'model'.

    Args:
      fsdp: shard the 'embed' dimension of parameters over the 'data' axis (fully-sharded data
        parallelism: parameters and optimizer state are split across data-parallel replicas).
    """
    return (
        ("batch", "data"),
        ("vocab", "model"),
        ("mlp", "model"),
        ("heads", "model"),
        ("joined_kv", "model"),
        ("kv", None),
        ("length", None),
        ("relpos_buckets", None),
        ("embed", "data" if fsdp else None),
    )


_COORDINATOR_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def maybe_initialize_distributed(mode: str | bool = "auto") -> bool:
    """Starts multi-host JAX when the environment describes several processes.

    Must run before any JAX computation. With mode 'auto', initialises when a coordinator
    address is set (JAX_COORDINATOR_ADDRESS with JAX_NUM_PROCESSES and JAX_PROCESS_ID), under
    SLURM with several tasks, or on a multi-host Cloud TPU slice; `True` always initialises
    (JAX then auto-detects the cluster) and `False` never does.

    Returns:
      whether `jax.distributed.initialize` was called.
    """
    if mode is False or mode == "never":
        return False
    if processes.distributed():  # a later experiment of the same process (a sweep's point)
        return True
    if mode == "auto":
        coordinator = next((os.environ[v] for v in _COORDINATOR_VARIABLES if os.environ.get(v)),
                           None)
        slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
        tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
        if coordinator:
            num_processes = os.environ.get("JAX_NUM_PROCESSES")
            process_id = os.environ.get("JAX_PROCESS_ID")
            if num_processes is None or process_id is None:
                raise ValueError(f"A coordinator address is set ({coordinator}) but "
                                 "JAX_NUM_PROCESSES or JAX_PROCESS_ID is not; set both.")
            _use_cpu_collectives()
            jax.distributed.initialize(coordinator_address=coordinator,
                                       num_processes=int(num_processes),
                                       process_id=int(process_id))
            return True
        if slurm_tasks <= 1 and "," not in tpu_hosts:
            return False
    elif mode is not True and mode != "always":
        raise ValueError(f"initialize_distributed={mode!r}: use 'auto', True or False.")
    _use_cpu_collectives()
    jax.distributed.initialize()
    return True


def _use_cpu_collectives() -> None:
    """CPU devices of several processes talk through gloo (JAX's CPU collectives), which
    older JAX versions leave off; accelerators use their own."""
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def create_mesh(data_parallelism: int = -1, model_parallelism: int = 1,
                devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A ('data', 'model') mesh over all devices; one of the two sizes may be -1 (inferred).

    Raises:
      ValueError: the sizes do not multiply to the number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    count = len(devices)
    data, model = int(data_parallelism), int(model_parallelism)
    if data == -1 and model == -1:
        raise ValueError("At most one of data_parallelism and model_parallelism may be -1.")
    if data == -1 or model == -1:
        known = model if data == -1 else data
        if known <= 0 or count % known:
            raise ValueError(f"A mesh axis of size {known} does not divide the {count} devices; "
                             "set data_parallelism * model_parallelism = number of devices.")
        data, model = (count // known, known) if data == -1 else (known, count // known)
    if data <= 0 or model <= 0 or data * model != count:
        raise ValueError(f"Mesh (data={data}, model={model}) needs {data * model} devices but "
                         f"{count} are available; set data_parallelism * model_parallelism = "
                         f"{count} (or one of them to -1).")
    try:
        from jax.experimental import mesh_utils

        device_grid = mesh_utils.create_device_mesh((data, model), devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        device_grid = np.asarray(devices).reshape(data, model)
    return Mesh(device_grid, MESH_AXES)


def _set_mesh(mesh: Mesh):
    set_mesh = getattr(jax, "set_mesh", None) or jax.sharding.use_mesh
    return set_mesh(mesh)


@dataclasses.dataclass(frozen=True)
class Partitioner:
    """A mesh plus the logical-axis rules; turns logical specs into shardings."""

    mesh: Mesh
    rules: LogicalRules = dataclasses.field(default_factory=logical_axis_rules)

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Makes the mesh and rules current, so logical sharding constraints take effect."""
        with _set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    def mesh_axes(self, logical_spec: PartitionSpec | Sequence[Optional[str]]) -> PartitionSpec:
        """Logical spec ('batch', 'embed') -> mesh PartitionSpec ('data', None)."""
        return nn.logical_to_mesh_axes(tuple(logical_spec), self.rules)

    def sharding(self, logical_spec: PartitionSpec | Sequence[Optional[str]]) -> NamedSharding:
        return NamedSharding(self.mesh, self.mesh_axes(logical_spec))

    def shardings(self, logical_specs: Any) -> Any:
        """Maps a tree of logical PartitionSpecs to a tree of NamedShardings."""
        return nn.logical_to_mesh_sharding(logical_specs, self.mesh, self.rules)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def batch_sharding(self, ndim: int) -> NamedSharding:
        """Leading (batch) dimension over 'data', the rest replicated."""
        return self.sharding(("batch",) + (None,) * (ndim - 1))

    def shardings_for(self, shapes: Any, logical_axes: Any) -> Any:
        """NamedShardings for any tree of arrays, checked to split evenly over the mesh.

        Args:
          shapes: the tree's leaves as anything with `.shape` (e.g. `jax.ShapeDtypeStruct`).
          logical_axes: the same tree with a `PartitionSpec` of logical axis names per leaf.

        Raises:
          ValueError: naming every leaf with a dimension the mesh cannot split evenly.
        """
        shardings = self.shardings(logical_axes)
        self._check_divisible(shapes, shardings)
        return shardings

    def param_shardings(self, model: model_spec.ModelSpec) -> Any:
        """NamedSharding tree matching `model`'s parameter tree, checked for divisibility."""
        return self.shardings_for(model.param_shapes(), model.param_logical_axes())

    def _check_divisible(self, shapes: Any, shardings: Any) -> None:
        problems = []
        flat_shapes = tree.flatten(shapes)
        flat_shardings = tree.flatten(shardings)
        for key, shape in flat_shapes.items():
            spec = flat_shardings[key].spec
            for dim, axes in zip(shape.shape, tuple(spec)):
                if axes is None:
                    continue
                size = int(np.prod([self.mesh.shape[a] for a in
                                    ((axes,) if isinstance(axes, str) else axes)]))
                if dim % size:
                    problems.append(f"  {key} {tuple(shape.shape)}: dimension {dim} over mesh "
                                    f"axis {axes} of size {size}")
        if problems:
            raise ValueError("These parameters cannot be split evenly over the mesh "
                             f"{dict(self.mesh.shape)}:\n" + "\n".join(problems) +
                             "\nChoose a model_parallelism that divides the model's heads*head_dim,"
                             " mlp_dim and vocab_size (or disable fsdp).")

    def init_params(self, model: model_spec.ModelSpec, rng: jax.Array) -> Any:
        """Initialises parameters directly into their shards (no full copy on one device)."""
        init = jax.jit(model.init_params, out_shardings=self.param_shardings(model))
        with self.activate():
            return init(rng)

    def shard_params(self, params: Any, model: model_spec.ModelSpec) -> Any:
        """Places host (numpy) parameters, e.g. from a checkpoint, onto their shards."""
        tree.check_against_config(params, model, "the parameters being sharded")
        return self.place(params, self.param_shardings(model))

    @staticmethod
    def place(tree: Any, shardings: Any) -> Any:
        """Places a tree of host or device arrays onto a matching tree of shardings.

        Device arrays move shard to shard (never gathered); host arrays are sliced per shard.
        """
        def place_one(value, sharding):
            if isinstance(value, jax.Array):
                return value if value.sharding == sharding else jax.device_put(value, sharding)
            value = np.asarray(value)
            return jax.make_array_from_callback(value.shape, sharding,
                                                lambda index: value[index])
        return jax.tree_util.tree_map(place_one, tree, shardings)

    def host_rows(self, num_rows: int) -> np.ndarray:
        """The rows of a (global) batch of `num_rows` that this process's devices hold along
        'data', in order: the rows it feeds (all of them with one process)."""
        if processes.count() == 1:
            return np.arange(num_rows)
        index_map = self.batch_sharding(1).addressable_devices_indices_map((num_rows,))
        rows = {row for index in index_map.values() for row in range(*index[0].indices(num_rows))}
        return np.asarray(sorted(rows), np.int64)

    def shard_batch(self, batch: Any, num_rows: Optional[int] = None) -> Any:
        """Places a batch (a tree of arrays with a leading batch dimension) on the mesh, batch
        over 'data'. With several processes each one gives only its rows of the global batch,
        `rows = host_rows(num_rows)` (`num_rows` being the global batch size), and the global
        arrays are assembled from them."""
        if processes.count() > 1 and num_rows is None:
            raise ValueError("With several processes shard_batch needs num_rows, the global "
                             "batch size, to place this process's rows.")
        rows = None if processes.count() == 1 else self.host_rows(num_rows)
        position = None if rows is None else {row: i for i, row in enumerate(rows)}

        def place(value):
            value = np.asarray(value)
            sharding = self.batch_sharding(value.ndim)
            if rows is None:
                return jax.device_put(value, sharding)
            if len(value) != len(rows):
                raise ValueError(f"This process holds {len(rows)} of the batch's {num_rows} rows "
                                 f"but was given {len(value)}.")

            def shard(index):
                wanted = [position[row] for row in range(*index[0].indices(num_rows))]
                return value[wanted][(slice(None),) + tuple(index[1:])]
            return jax.make_array_from_callback((num_rows,) + value.shape[1:], sharding, shard)
        return jax.tree_util.tree_map(place, batch)

    def jit(self, fn: Callable, *, in_shardings: Any = None, out_shardings: Any = None,
            static_argnums: Sequence[int] = (), donate_argnums: Sequence[int] = ()) -> Callable:
        """`jax.jit` with shardings whose tracing and calls run with the rules active."""
        jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                         static_argnums=tuple(static_argnums), donate_argnums=tuple(donate_argnums))

        @functools.wraps(fn)
        def call(*args, **kwargs):
            with self.activate():
                return jitted(*args, **kwargs)

        def lower(*args, **kwargs):  # ahead-of-time compilation and cost analysis
            with self.activate():
                return jitted.lower(*args, **kwargs)

        call.lower = lower
        return call


def single_device_partitioner() -> Partitioner:
    """A Partitioner over the first device alone: what a jitted model call uses when it is
    given no mesh (tests and one-device benchmarks)."""
    return Partitioner(mesh=create_mesh(1, 1, devices=jax.devices()[:1]))


def create_partitioner(data_parallelism: int = -1, model_parallelism: int = 1,
                       fsdp: bool = False) -> Partitioner:
    """A Partitioner over all devices (the gin entry point for mesh settings)."""
    mesh = create_mesh(data_parallelism, model_parallelism)
    logger.info("Mesh %s over %d device(s), fsdp=%s", dict(mesh.shape), mesh.size, fsdp)
    return Partitioner(mesh=mesh, rules=logical_axis_rules(fsdp))
