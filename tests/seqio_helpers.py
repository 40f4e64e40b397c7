"""seqio and TensorFlow for the tests that use them, imported when first used: importing
TensorFlow takes about 6 s, and each test process imports every test file to collect the suite."""

import importlib
import importlib.util
import os


class LazyModule:
    """The module `name`, imported on the first attribute read."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        if attribute.startswith("_"):  # pytest looks for its markers on each module-level name
            raise AttributeError(attribute)
        return getattr(importlib.import_module(self._name), attribute)


seqio = LazyModule("seqio")
tf = LazyModule("tensorflow")
seqio_tasks = LazyModule("rso_jax.data.seqio_tasks")  # imports seqio and TensorFlow

# seqio's own 26-piece test model (found without importing seqio): T5's special ids, but 'A'
# encodes as two tokens in it.
SEQIO_TEST_MODEL = os.path.join(importlib.util.find_spec("seqio").submodule_search_locations[0],
                                "test_data", "sentencepiece", "sentencepiece.model")
