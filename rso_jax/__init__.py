"""rso_jax: statistical rejection sampling preference optimisation for T5 in JAX/Flax.

Modules are imported where they are used; importing the package itself loads nothing heavy
(in particular no TensorFlow or seqio, which only the data modules need).
"""

import os

__version__ = "0.1.0"

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # rso_jax/ (its assets/)
REPO_ROOT = os.path.dirname(PACKAGE_DIR)  # the checkout: gin/, configs/
