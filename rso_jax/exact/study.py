"""The exact test of RSO's central claim: does fitting on pairs sampled from pi_r estimate pi_r
better than pairs from pi_sft or from another policy? Measured on closed-form problems.

  python -m rso_jax.main --gin_file=configs/exact/rso_claim.gin     # about 7 minutes on 2 cores

Every panel varies one setting around the base point (beta 0.5, gamma = beta, N = 64
candidates, K = 8 kept, first-round pairs, sigmoid-norm, labels from the true reward's
Bradley-Terry model, no misspecification) and, for each seed, draws one problem, then pairs from
every source, fits the policy family to them and measures it against the truth (`problems`):

  budget             the number of pairs (all budgets are prefixes of one draw per source), once
                     with pi_r inside the family and once with `misspecified_share` outside it
  beta               pi_r's and rejection sampling's beta (and the loss's gamma, kept equal)
  num_candidates     N, the candidates per prompt the selection sees
  misspecification   the share of the reward's variance the family cannot express
  loss               sigmoid-norm, hinge-norm, hinge (the project's `losses`)
  ranker_correlation a noisy ranker labelling the pairs and driving the selection
  pair_rule          first-round and tournament pairs

Within a seed every source sees the same problem, and every panel value the same random draws
(common random numbers), so differences between sources and along an axis are paired by seed.
Writes <work_dir>/results.csv (one row per panel, value, source, budget and seed), then the
report (`exact.report`: summary.md with intervals and paired tests, and figures).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
import os
import time
from typing import Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rso_jax.runtime import atomic_io
from rso_jax.exact import pair_sources, problems
from rso_jax.exact.fit import FitConfig, fit_policy

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
MEASURES = ("kl_to_optimal", "expected_reward", "win_rate_vs_sft", "kl_to_sft", "regret",
            "tilt_ratio")
COLUMNS = ("panel", "value", "source", "budget", "seed", *MEASURES, "acceptance_rate",
           "gradient_norm")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The base point, the panels' values and the number of seeds (gin-configurable)."""

    seeds: int = 32  # independent problems (and their pairs) per point
    problem: problems.ProblemConfig = problems.ProblemConfig()
    fit: FitConfig = FitConfig()
    sources: tuple[str, ...] = pair_sources.SOURCES
    beta: float = 0.5
    gamma: Optional[float] = None  # the loss's temperature; None: equal to beta (the MLE of pi_r)
    num_candidates: int = 64
    num_samples: int = 8
    pair_rule: str = "first_round"
    loss: str = "sigmoid_norm"
    budget: int = 1024  # pairs, in every panel but 'budget'
    budgets: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
    misspecified_share: float = 0.5  # the budget panel's second run
    betas: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
    candidate_counts: tuple[int, ...] = (8, 16, 32, 64, 128)
    misspecifications: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    losses: tuple[str, ...] = ("sigmoid_norm", "hinge_norm", "hinge")
    ranker_correlations: tuple[float, ...] = (1.0, 0.9, 0.7, 0.43)
    pair_rules: tuple[str, ...] = ("first_round", "tournament")

    def __post_init__(self):
        unknown = sorted(set(self.sources) - set(pair_sources.SOURCES))
        if unknown:
            raise ValueError(f"StudyConfig.sources: unknown {unknown}; choose from "
                             f"{pair_sources.SOURCES}.")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 2:
            raise ValueError(f"StudyConfig.seeds must be an integer >= 2 (intervals need two), "
                             f"got {self.seeds!r}.")
        if not self.budgets or min(self.budgets) < 1:
            raise ValueError(f"StudyConfig.budgets must be positive pair counts, got "
                             f"{self.budgets!r}.")
        if self.num_samples > min((self.num_candidates, *self.candidate_counts)):
            raise ValueError(f"StudyConfig.num_samples={self.num_samples} is more than the "
                             f"fewest candidates drawn ({min(self.candidate_counts)}).")


@dataclasses.dataclass(frozen=True)
class Point:
    """One setting of every axis: a panel's value applied to the base point."""

    problem: problems.ProblemConfig
    beta: float
    gamma: float
    num_candidates: int
    num_samples: int
    pair_rule: str
    loss: str
    budgets: tuple[int, ...]
    sources: tuple[str, ...]


def panel_points(config: StudyConfig) -> Iterator[tuple[str, object, Point]]:
    """(panel, value, point) for every point of every panel, in order."""
    base = Point(problem=config.problem, beta=config.beta,
                 gamma=config.beta if config.gamma is None else config.gamma,
                 num_candidates=config.num_candidates, num_samples=config.num_samples,
                 pair_rule=config.pair_rule, loss=config.loss, budgets=(config.budget,),
                 sources=config.sources)

    def misspecified(share: float) -> problems.ProblemConfig:
        return dataclasses.replace(config.problem, misspecification=share)

    for share in (config.problem.misspecification, config.misspecified_share):
        yield "budget", share, dataclasses.replace(base, problem=misspecified(share),
                                                   budgets=tuple(sorted(config.budgets)))
    for beta in config.betas:
        gamma = beta if config.gamma is None else config.gamma
        yield "beta", beta, dataclasses.replace(base, beta=beta, gamma=gamma)
    candidate_sources = tuple(s for s in config.sources if s in pair_sources.CANDIDATE_SOURCES)
    for count in config.candidate_counts:
        yield "num_candidates", count, dataclasses.replace(base, num_candidates=count,
                                                           sources=candidate_sources)
    for share in config.misspecifications:
        yield "misspecification", share, dataclasses.replace(base, problem=misspecified(share))
    for loss in config.losses:
        yield "loss", loss, dataclasses.replace(base, loss=loss)
    for correlation in config.ranker_correlations:
        yield "ranker_correlation", correlation, dataclasses.replace(
            base, problem=dataclasses.replace(config.problem, ranker_correlation=correlation))
    for rule in config.pair_rules:
        yield "pair_rule", rule, dataclasses.replace(base, pair_rule=rule)


@functools.partial(jax.jit, static_argnames=("config",))
def _problems(keys_s: jax.Array, config: problems.ProblemConfig) -> problems.Problem:
    return jax.vmap(lambda key: problems.make_problem(config, key))(keys_s)


@functools.partial(jax.jit, static_argnames=("source", "pair_rule", "num_pairs",
                                             "num_candidates", "num_samples"))
def _drawn_pairs(problems_s: problems.Problem, keys_s: jax.Array, beta: jax.Array, *,
                 source: str, pair_rule: str, num_pairs: int, num_candidates: int,
                 num_samples: int) -> pair_sources.PreferencePairs:
    """Every seed's `num_pairs` pairs from `source` ([S, B] arrays)."""
    draw = functools.partial(pair_sources.draw_pairs, source=source, pair_rule=pair_rule,
                             num_pairs=num_pairs, num_candidates=num_candidates,
                             num_samples=num_samples)
    return jax.vmap(draw, in_axes=(0, 0, None))(problems_s, keys_s, beta)


@functools.partial(jax.jit, static_argnames=("loss", "fit_config"))
def _fitted_measures(problems_s: problems.Problem, pairs_s: pair_sources.PreferencePairs,
                     budgets_b: jax.Array, beta: jax.Array, gamma: jax.Array, *, loss: str,
                     fit_config: FitConfig) -> dict[str, jax.Array]:
    """Every seed's pairs fitted at every budget (a prefix of them) and measured: [S, B] each."""

    def one_budget(problem, pairs, budget):
        theta_d, gradient_norm = fit_policy(problem, pairs, budget, gamma, loss=loss,
                                            config=fit_config)
        measured = problems.measures(problem, problems.policy_logps(problem, theta_d), beta)
        return {**measured, "tilt_ratio": problems.tilt_ratio(problem, theta_d, beta),
                "gradient_norm": gradient_norm,
                "acceptance_rate": pairs.acceptance_rate}

    per_budget = jax.vmap(one_budget, in_axes=(None, None, 0))
    return jax.vmap(per_budget, in_axes=(0, 0, None))(problems_s, pairs_s, budgets_b)


def _source_key(seed_key: jax.Array, source: str) -> jax.Array:
    return jax.random.fold_in(seed_key, pair_sources.SOURCES.index(source))


def point_rows(config: StudyConfig, panel: str, value, point: Point) -> list[dict]:
    """The rows of one point: every source, budget and seed."""
    seed_keys_s = jax.vmap(jax.random.PRNGKey)(jnp.arange(config.seeds))
    problem_keys_s = jax.vmap(lambda k: jax.random.fold_in(k, 1_000))(seed_keys_s)
    problems_s = _problems(problem_keys_s, point.problem)
    budgets_b = jnp.asarray(point.budgets, jnp.int32)
    rows = []
    for source in point.sources:
        keys_s = jax.vmap(lambda k: _source_key(k, source))(seed_keys_s)
        beta, gamma = jnp.float32(point.beta), jnp.float32(point.gamma)
        pairs_s = _drawn_pairs(problems_s, keys_s, beta, source=source,
                               pair_rule=point.pair_rule, num_pairs=max(point.budgets),
                               num_candidates=point.num_candidates,
                               num_samples=point.num_samples)
        measured = jax.device_get(_fitted_measures(problems_s, pairs_s, budgets_b, beta, gamma,
                                                   loss=point.loss, fit_config=config.fit))
        for seed in range(config.seeds):
            for b, budget in enumerate(point.budgets):
                rows.append({"panel": panel, "value": value, "source": source,
                             "budget": budget, "seed": seed,
                             **{name: float(np.asarray(measured[name])[seed, b])
                                for name in (*MEASURES, "acceptance_rate", "gradient_norm")}})
    return rows


def reference_rows(config: StudyConfig) -> list[dict]:
    """pi_sft and pi_r themselves at the base point (the two ends every fit lies between)."""
    seed_keys_s = jax.vmap(jax.random.PRNGKey)(jnp.arange(config.seeds))
    problem_keys_s = jax.vmap(lambda k: jax.random.fold_in(k, 1_000))(seed_keys_s)
    rows = []
    for share in (config.problem.misspecification, config.misspecified_share):
        problems_s = _problems(problem_keys_s, dataclasses.replace(config.problem,
                                                                    misspecification=share))
        for name in ("sft_policy", "optimal_policy_exact"):
            def measured_fn(problem, name=name):
                logps_pm = (problem.sft_logps_pm if name == "sft_policy"
                            else problems.optimal_policy_logps(problem, config.beta)[0])
                # pi_sft is theta = 0; pi_r is not in the family unless m = 0 (tilt 1 then).
                return {**problems.measures(problem, logps_pm, config.beta),
                        "tilt_ratio": jnp.float32(0.0 if name == "sft_policy" else jnp.nan)}

            measured = jax.device_get(jax.vmap(measured_fn)(problems_s))
            for seed in range(config.seeds):
                rows.append({"panel": "reference", "value": share, "source": name,
                             "budget": 0, "seed": seed,
                             **{m: float(np.asarray(measured[m])[seed]) for m in MEASURES},
                             "acceptance_rate": float("nan"), "gradient_norm": 0.0})
    return rows


def write_rows(path: str, rows: list[dict]) -> None:
    def text() -> str:
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    atomic_io.write_text(path, text())


def run_study(config: StudyConfig = StudyConfig(), work_dir: str = "runs/exact") -> str:
    """Runs every panel, writes <work_dir>/results.csv and the report; returns the CSV's path."""
    from rso_jax.exact import report

    os.makedirs(work_dir, exist_ok=True)
    started = time.monotonic()
    rows = reference_rows(config)
    for panel, value, point in panel_points(config):
        rows.extend(point_rows(config, panel, value, point))
        logger.info("exact study: %s = %s done (%.0f s)", panel, value,
                    time.monotonic() - started)
    path = os.path.join(work_dir, RESULTS_FILE)
    write_rows(path, rows)
    report.write_report(path, work_dir)
    print(f"exact study: {len(rows)} rows in {time.monotonic() - started:.0f} s; "
          f"{os.path.join(work_dir, report.SUMMARY_FILE)}")
    return path
