"""rso_jax: statistical rejection sampling (RSO), RS-DPO and best-of-N for T5 in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="rso_jax",
    version="0.1.0",
    description="Statistical rejection sampling preference optimisation for T5 in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["rso_jax", "rso_jax.*"]),
    package_data={"rso_jax": ["assets/*"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.10",
        "tensorstore>=0.1.60",
        "seqio>=0.0.19",
        "gin-config>=0.5",
        "numpy>=1.26",
        "safetensors>=0.4",
        "sentencepiece>=0.1.99",
        "pyarrow>=14",
        "tqdm>=4.60",
        "tensorboardX>=2.6",
        "matplotlib>=3.7",  # the plots of sweeps (rso_jax.tools.plots); imported only there
    ],
    extras_require={
        # torch first and pinned to the CPU build these machines carry; transformers (which
        # does not require torch) is only the T5 reference implementation for the tests.
        "test": [
            "torch==2.13.0",
            "transformers>=4.44",
            "pytest>=8",
            "pytest-xdist>=3.5",
        ],
    },
    entry_points={
        "console_scripts": [
            "rso-jax=rso_jax.main:main",
            "rso-jax-convert=rso_jax.weights.convert:main",
        ],
    },
)
