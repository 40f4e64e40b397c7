"""The sweep's plots (`rso_jax.tools.plots`) from rows and files written here: each is a PNG that
matplotlib reads back; a plot with nothing to show is not drawn; a numeric axis is a line
whose points sit at the rows' values, named settings are bars."""

import json

import numpy as np
import pytest

from rso_jax.tools import plots

image = pytest.importorskip("matplotlib.image")


def _summary(axis, values):
    return [{axis: str(v), "SEED": "-", "trained.gold_win_rate_vs_sft_target": 0.5 + 0.1 * i,
             "trained.gold_win_rate_vs_sft_target.std": 0.02,
             "trained.proxy_win_rate_vs_sft_target": 0.6, "select.acceptance_rate": 1 / (i + 1),
             "sft.gold_win_rate_vs_sft_target": 0.4} for i, v in enumerate(values)]


@pytest.fixture
def drawn(monkeypatch):
    """{"axes": ...}: the axes of the last figure a plot made."""
    found = {}
    plt = plots.pyplot()
    original = plt.subplots

    def spy(*args, **kwargs):
        figure, axes = original(*args, **kwargs)
        found["axes"] = axes
        return figure, axes
    monkeypatch.setattr(plt, "subplots", spy)
    return found


def _read(path):
    picture = image.imread(path)
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.std() > 0
    return picture


def test_a_numeric_axis_is_a_line_and_named_settings_are_bars(tmp_path, drawn):
    path = plots.metric_against_axis(_summary("BETA", [0.1, 1, 10]), "BETA", [],
                                     plots.WIN_RATES, str(tmp_path / "beta.png"), "win rate",
                                     baseline=plots.SFT_POLICY_GOLD)
    _read(path)
    axes = drawn["axes"]
    assert axes.get_xscale() == "log"  # the values span a factor of 100
    gold = axes.get_lines()[0]
    assert list(gold.get_xdata()) == [0.1, 1.0, 10.0]
    assert list(gold.get_ydata()) == pytest.approx([0.5, 0.6, 0.7])
    assert axes.get_lines()[-1].get_ydata()[0] == pytest.approx(0.4)  # the SFT policy
    path = plots.metric_against_axis(_summary("setting", ["raft", "rso"]), "setting", [],
                                     plots.WIN_RATES, str(tmp_path / "bars.png"), "win rate")
    _read(path)
    heights = [patch.get_height() for patch in drawn["axes"].patches]
    assert heights == pytest.approx([0.5, 0.6, 0.6, 0.6])  # gold: raft, rso; proxy: raft, rso


def test_nothing_to_show_draws_nothing(tmp_path):
    assert plots.metric_against_axis(_summary("BETA", [0.1]), "BETA", [], plots.WIN_RATES,
                                     str(tmp_path / "one.png"), "win rate") is None
    assert plots.reward_distributions({"a": str(tmp_path)}, str(tmp_path / "r.png")) is None
    assert plots.best_of_n_curves([("a", {"policies": {}})], str(tmp_path / "b.png")) is None
    assert plots.training_curves(str(tmp_path), str(tmp_path / "t.png")) is None
    assert not list(tmp_path.glob("*.png"))


def test_reward_distributions_best_of_n_and_training_curves_are_drawn(tmp_path):
    work_dir = tmp_path / "point"
    (work_dir / "select").mkdir(parents=True)
    (work_dir / "score").mkdir()
    rng = np.random.default_rng(0)
    np.savez(work_dir / "score" / "rewards.npz", rewards=rng.normal(size=(8, 16)),
             gold_rewards=rng.normal(size=(8, 16)))
    np.savez(work_dir / "select" / "kept.npz", mask=rng.random((8, 16)) < 0.5)
    _read(plots.reward_distributions({"rso": str(work_dir)}, str(tmp_path / "rewards.png")))
    rows = [{"n": n, "gold_reward": 1.0 + np.log(n), "proxy_reward": 0.0,
             "kl_measured": 0.9 * (np.log(n) - (n - 1) / n)} for n in (1, 2, 4, 8)]
    results = [("rso", {"best_of_n": {"policies": {"sft": rows}}})] * 2
    _read(plots.best_of_n_curves(results, str(tmp_path / "best_of_n.png")))
    (work_dir / "sft").mkdir()
    lines = [json.dumps({"step": s, "train/loss": 3.0 / s}) for s in range(1, 20)]
    lines += [json.dumps({"step": 10, "eval/accuracy": 0.7}), '{"step": 11, "train/lo']
    (work_dir / "sft" / "metrics.jsonl").write_text("\n".join(lines))  # a torn last line
    assert len(plots.read_metrics(str(work_dir / "sft" / "metrics.jsonl"))) == 20
    _read(plots.training_curves(str(work_dir), str(tmp_path / "steps.png")))


def test_best_of_n_has_a_line_per_setting_and_policy_averaged_over_seeds(tmp_path, drawn):

    def result(shift, gold=True):
        rows = [{"n": n, "gold_reward": shift + n if gold else None, "proxy_reward": -n,
                 "kl_measured": 0.0} for n in (1, 2)]
        return {"best_of_n": {"policies": {"sft": rows}}}
    results = [("a", result(0.0)), ("a", result(2.0)), ("b", result(10.0, gold=False))]
    plots.best_of_n_curves(results, str(tmp_path / "b.png"))
    reward_axis = drawn["axes"][0]
    lines = {bars.get_label(): list(bars.lines[0].get_ydata())
             for bars in reward_axis.containers}
    assert lines == {"sft policy, a (gold_reward)": [2.0, 3.0],  # the mean over its seeds
                     "sft policy, b (proxy_reward)": [-1.0, -2.0]}  # no gold figures


def test_a_plot_that_fails_is_skipped_and_the_others_drawn(tmp_path, caplog):
    summary = _summary("BETA", [0.1, 1.0])
    summary[0]["trained.gold_win_rate_vs_sft_target"] = "not a number"
    written = plots.sweep_plots(str(tmp_path), summary, ["BETA", "SEED"],
                                [({"BETA": "0.1", "SEED": "0"}, str(tmp_path / "p0"), None)])
    assert written == [str(tmp_path / "plots" / "BETA.acceptance.png")]
    assert "Plot " + str(tmp_path / "plots" / "BETA.png") + " not drawn" in caplog.text
