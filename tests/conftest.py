"""Test set-up: eight simulated CPU devices, fixed before JAX is first imported, and one XLA
compilation cache for the test processes and the experiments they start (the same tiny
programs are compiled once, not once per run; at most 2 GB, least recently used first out).
Programs that take a tenth of a second or more to compile go into it (JAX's default is a
second): a tiny run compiles about thirty under a second each, about 3 s per run that each later
run of the same shapes would otherwise spend again; the many eager operations below a tenth are
cheaper to compile again than to write."""

import os
import tempfile

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"rso_jax_tests_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 1024 ** 3))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

# The longest test files (end-to-end runs, training to convergence), longest first: pytest-xdist hands files to its
# workers in collection order, and a long file started last would run alone at the end.
LONGEST_FIRST = ("test_processes.py", "test_experiment_tasks.py", "test_methods.py",
                 "test_experiment.py", "test_sweep.py", "test_train_loop.py",
                 "test_reward_models.py", "test_bench_suite.py", "test_seqio_task.py",
                 "test_training.py", "test_plan.py", "test_configs.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.fixture(autouse=True)
def no_gin_configuration_left_behind():
    """Each test starts with no gin configuration: `main.main` leaves its run's configuration
    bound when it returns (as any gin program does), and `model_sizes.model_config` refuses to
    clear one, so a test after an in-process run would otherwise depend on the order of files."""
    yield
    import gin
    gin.clear_config()
