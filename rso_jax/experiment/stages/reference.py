"""Reference: the SFT policy's log-probability of every chosen and rejected response,
computed once (the preference loss's reference term); in rounds after the first, the SFT or
the previous round's policy's (REFERENCE_POLICY)."""

from __future__ import annotations

import numpy as np

from rso_jax.experiment.context import StageContext
from rso_jax.experiment.stages import select
from rso_jax.experiment.stage import REFERENCE_POLICY, Stage

LOGPS_FILE = "logps.npz"


def run(context: StageContext) -> dict:
    pairs = context.load_arrays("select", select.PAIRS_FILE)
    params = context.stage_params(context.reference_policy)
    logps = {name: context.sequence_logps(params, pairs["prompts"], pairs[name])
             for name in ("chosen", "rejected")}
    context.save_arrays("reference", LOGPS_FILE, **logps)
    return {"policy": context.reference_policy, "pairs": int(len(logps["chosen"])),
            "mean_chosen_minus_rejected": float(np.mean(logps["chosen"] - logps["rejected"]))}


STAGE = Stage("reference", run, lambda e: {}, reads=lambda e: ("select", REFERENCE_POLICY))
