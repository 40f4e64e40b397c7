"""Test set-up: eight simulated CPU devices, fixed before JAX is first imported, and one XLA
compilation cache for the test processes and the experiments they start (the same tiny
programs are compiled once, not once per run; at most 2 GB, least recently used first out)."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"rso_jax_tests_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 1024 ** 3))
