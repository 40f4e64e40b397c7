"""XLA:CPU settings for our jitted steps; apply them before JAX starts its first backend.

XLA:CPU hands matmuls, reductions and elementwise ops to YNNPACK fusions. In the preference
train step (T5 small, CPU, float32) the YNNPACK reductions are the slow part: the relative
position bias gradient (a sum over the batch of every layer's score gradients) took 154 ms and
Adafactor's factored second moments of the 32128-wide output projection 75 ms, against
~10 ms for the same bytes elsewhere. Keeping YNNPACK to matmuls made the step ~8% faster
(docs/benchmarks.md); sampling was unchanged within noise. The flag is read by the CPU
backend only, so GPU and TPU runs are unaffected.
"""

from __future__ import annotations

import logging
import os
from typing import MutableMapping, Optional

logger = logging.getLogger(__name__)

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_DOTS_ONLY = f"{YNN_FUSION_FLAG}=dot"


def restrict_ynnpack_to_dots(environ: Optional[MutableMapping[str, str]] = None) -> bool:
    """Adds `YNN_DOTS_ONLY` to XLA_FLAGS unless the user already chose a YNNPACK fusion type.

    Call it before the first JAX computation (XLA reads XLA_FLAGS when the backend starts);
    later, it changes nothing in this process. Returns whether the flag was added.
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if YNN_FUSION_FLAG in flags:
        return False
    environ["XLA_FLAGS"] = f"{flags} {YNN_DOTS_ONLY}".strip()
    logger.debug("XLA_FLAGS=%s", environ["XLA_FLAGS"])
    return True
