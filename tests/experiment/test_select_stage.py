"""The select stage's pair rules on kept responses, against numpy references written here:
RSO's ranks decided by the pairwise ranker (or, when named so, by eq. 7 rewards), RS-DPO's rule,
best vs worst and best vs random."""

import types

import jax
import numpy as np
import pytest

from rso_jax.experiment import config
from rso_jax.experiment.stages import select

NUM_PROMPTS, NUM_CANDIDATES, KEPT = 40, 8, 6


def knockout(members, first_wins):
    """A knock-out bracket in the members' order (an odd last one gets a bye); its matches as
    (winner, loser), round by round."""
    matches = []
    while len(members) > 1:
        advancing = []
        for a, b in zip(members[0::2], members[1::2]):
            winner, loser = (a, b) if first_wins(a, b) else (b, a)
            matches.append((winner, loser))
            advancing.append(winner)
        if len(members) % 2:
            advancing.append(members[-1])
        members = advancing
    return matches


@pytest.fixture(scope="module")
def setting():
    """Kept responses (some prompts keep fewer), a hidden ranker strength per candidate that
    decides the ranker's preferences, and eq. 7 rewards that disagree with it."""
    rng = np.random.default_rng(0)
    strength = rng.normal(size=(NUM_PROMPTS, NUM_CANDIDATES))
    rewards = rng.normal(size=(NUM_PROMPTS, NUM_CANDIDATES)).astype(np.float32)
    kept = np.stack([rng.permutation(NUM_CANDIDATES)[:KEPT] for _ in range(NUM_PROMPTS)])
    valid = np.ones_like(kept, bool)
    valid[::5, KEPT - 1] = False  # a prompt with 5 kept responses: a bye in the tournament
    kept = np.where(valid, kept, -1).astype(np.int32)
    tokens = np.zeros((NUM_PROMPTS, NUM_CANDIDATES, 3), np.int32)
    tokens[:, :, 0] = np.arange(NUM_CANDIDATES) + 10  # the text names the candidate
    asked = []

    def preference_probabilities(contexts, first, second):  # the scorer's interface
        rows = [int(c) for c in contexts]
        a, b = np.array([int(t) for t in first]), np.array([int(t) for t in second])
        asked.append(len(rows))
        return 1 / (1 + np.exp(-(strength[rows, a] - strength[rows, b])))

    context = types.SimpleNamespace(
        experiment=types.SimpleNamespace(
            num_sample_prompts=NUM_PROMPTS,
            sampling_task=types.SimpleNamespace(sft_examples=lambda split: [
                types.SimpleNamespace(context=str(p)) for p in range(NUM_PROMPTS)])),
        decode=lambda t: [str(int(row[0]) - 10) for row in np.asarray(t).reshape(-1, 3)],
        scorer=lambda: types.SimpleNamespace(preference_probabilities=preference_probabilities))
    return types.SimpleNamespace(strength=strength, rewards=rewards, kept=kept, valid=valid,
                                 samples={"tokens": tokens}, context=context, asked=asked)


def pairs_of(setting, rule, **fields):
    setting.asked.clear()
    selection = config.SelectionConfig(pair_rule=rule, **fields)
    pairs = select.make_pairs(setting.context, selection, setting.samples, setting.rewards,
                              setting.kept, setting.valid, jax.random.PRNGKey(0))
    chosen, rejected = np.asarray(pairs.chosen_index_pm), np.asarray(pairs.rejected_index_pm)
    valid = np.asarray(pairs.valid_pm)
    return [sorted((int(c), int(r)) for c, r, v in zip(chosen[p], rejected[p], valid[p]) if v)
            for p in range(NUM_PROMPTS)]


def members(setting, p):
    return [int(i) for i, v in zip(setting.kept[p], setting.valid[p]) if v]


@pytest.mark.parametrize("rule", ["first_round", "tournament", "tournament_by_reward"])
def test_rsos_ranks_are_decided_by_the_ranker_unless_named_by_reward(setting, rule):
    got = pairs_of(setting, rule)
    for p in range(NUM_PROMPTS):
        if rule == "tournament_by_reward":
            def first_wins(a, b):
                return setting.rewards[p, a] >= setting.rewards[p, b]
        else:
            def first_wins(a, b):
                return setting.strength[p, a] >= setting.strength[p, b]
        kept = members(setting, p)
        matches = (knockout(kept, first_wins) if rule != "first_round"
                   else [(a, b) if first_wins(a, b) else (b, a)
                         for a, b in zip(kept[0::2], kept[1::2])])
        assert got[p] == sorted(matches), (rule, p)
    if rule == "tournament":  # n - 1 matches per prompt put to the ranker, one call a round
        matches = sum(len(members(setting, p)) - 1 for p in range(NUM_PROMPTS))
        with_a_bye = sum(len(members(setting, p)) % 2 for p in range(NUM_PROMPTS))
        assert len(setting.asked) == 3  # rounds of 6 -> 3 -> 2 -> 1
        assert matches <= sum(setting.asked) <= matches + with_a_bye


def test_rs_dpo_pairs_every_ordered_pair_of_kept_responses_past_eta(setting):
    got = pairs_of(setting, "rs_dpo", eta=0.6, tau=0.8)
    for p in range(NUM_PROMPTS):
        r = setting.rewards[p]
        expected = [(j, l) for j in members(setting, p) for l in members(setting, p)
                    if j != l and 1 / (1 + np.exp(-(r[j] - r[l]) / 0.8)) > 0.6]
        assert got[p] == sorted(expected)


def test_best_vs_worst_and_best_vs_random_among_the_kept(setting):
    worst = pairs_of(setting, "best_vs_worst")
    random_pairs = pairs_of(setting, "best_vs_random")
    others = []
    for p in range(NUM_PROMPTS):
        kept = members(setting, p)
        rewards = setting.rewards[p, kept]
        best = kept[int(np.argmax(rewards))]
        assert worst[p] == [(best, kept[int(np.argmin(rewards))])]
        assert len(random_pairs[p]) == 1 and random_pairs[p][0][0] == best
        assert random_pairs[p][0][1] in kept and random_pairs[p][0][1] != best
        others.append(random_pairs[p][0][1])
    assert len(set(others)) > 3  # not always the same one


def test_raft_takes_the_winner_of_a_tournament_decided_by_the_ranker(setting):
    from rso_jax.selection import pair_rules
    everyone = np.tile(np.arange(NUM_CANDIDATES, dtype=np.int32), (NUM_PROMPTS, 1))
    pairs = pair_rules.tournament_rank_pairs(
        everyone, np.ones_like(everyone, bool),
        preference_fn=select._RankerPreference(setting.context, setting.samples))
    winners = pair_rules.tournament_winners(pairs, NUM_CANDIDATES)
    for p in range(NUM_PROMPTS):
        matches = knockout(list(range(NUM_CANDIDATES)),
                           lambda a, b: setting.strength[p, a] >= setting.strength[p, b])
        assert winners[p] == matches[-1][0]  # the final's winner


@pytest.mark.parametrize("rule, per_prompt", [("best_vs_worst", 2), ("first_round", 6)])
def test_kept_marks_the_candidates_the_policy_trains_on(setting, rule, per_prompt):
    """kept.npz marks the candidates in pairs: all six selected for first-round pairs, only the
    best and the worst of them for best-vs-worst."""
    saved = {}
    examples = [types.SimpleNamespace(context=str(p), target="t") for p in range(NUM_PROMPTS)]
    context = types.SimpleNamespace(
        experiment=types.SimpleNamespace(
            selection=config.SelectionConfig(method="sft", num_samples=KEPT, pair_rule=rule),
            num_sample_prompts=NUM_PROMPTS,
            sampling_task=types.SimpleNamespace(sft_examples=lambda split: examples)),
        load_arrays=lambda stage, name: {
            "sample": {**setting.samples, "prompts": np.zeros((NUM_PROMPTS, 4), np.int32)},
            "score": {"rewards": setting.rewards}}[stage],
        random_key=jax.random.PRNGKey, decode=setting.context.decode,
        scorer=setting.context.scorer,
        encode_responses=lambda texts: np.zeros((len(texts), 3), np.int32),
        save_arrays=lambda stage, name, **arrays: saved.__setitem__(name, arrays))
    select.run(context)
    mask = saved[select.KEPT_FILE]["mask"]
    assert mask.shape == (NUM_PROMPTS, NUM_CANDIDATES)
    assert (mask.sum(axis=1) == per_prompt).all()
    pairs = saved[select.PAIRS_FILE]
    paired = {int(t) - 10 for t in np.concatenate([pairs["chosen"][:, 0],
                                                  pairs["rejected"][:, 0]])}
    assert paired <= set(np.nonzero(mask.any(axis=0))[0])
    if rule == "best_vs_worst":  # the best and the worst reward of each prompt's six
        for p in range(NUM_PROMPTS):
            marked = np.nonzero(mask[p])[0]
            selected_rewards = setting.rewards[p, marked]
            assert len(marked) == 2 and selected_rewards.max() > selected_rewards.min()
