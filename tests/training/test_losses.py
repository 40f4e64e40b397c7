"""Losses equal numpy implementations of the paper's equations; gradients point the right way."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rso_jax.training import losses


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


@pytest.fixture(scope="module")
def logps():
    rng = np.random.default_rng(0)
    return tuple(rng.normal(-20, 5, size=64).astype(np.float32) for _ in range(4))


@pytest.mark.parametrize("gamma", [0.05, 1.0, 3.0])
def test_sigmoid_norm_is_eq_8(logps, gamma):
    w, l, ref_w, ref_l = logps
    expected = -log_sigmoid(gamma * (w - ref_w) - gamma * (l - ref_l)).mean()
    loss, metrics = losses.sigmoid_norm_loss(w, l, ref_w, ref_l, gamma=gamma)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["rewards/chosen"]), (gamma * (w - ref_w)).mean(),
                               rtol=1e-5)
    margins = gamma * (w - ref_w) - gamma * (l - ref_l)
    np.testing.assert_allclose(float(metrics["rewards/margin"]), margins.mean(), rtol=1e-4,
                               atol=1e-6)
    assert float(metrics["rewards/accuracy"]) == pytest.approx((margins > 0).mean())


@pytest.mark.parametrize("gamma", [0.05, 1.0])
def test_hinge_is_eq_9_and_hinge_norm_is_eq_10(logps, gamma):
    w, l, ref_w, ref_l = logps
    hinge, metrics = losses.hinge_loss(w, l, ref_w, ref_l, gamma=gamma)
    np.testing.assert_allclose(float(hinge), np.maximum(0, 1 - (gamma * w - gamma * l)).mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(float(metrics["rewards/chosen"]), (gamma * w).mean(), rtol=1e-5)
    norm, _ = losses.hinge_norm_loss(w, l, ref_w, ref_l, gamma=gamma)
    expected = np.maximum(0, 1 - (gamma * (w - ref_w) - gamma * (l - ref_l))).mean()
    np.testing.assert_allclose(float(norm), expected, rtol=1e-5)


def test_slic_is_eq_1(logps):
    """LOSS='hinge' with GAMMA=1/delta and LAMBDA: eq. (1) divided by delta (the margin sets
    the scale only), as the preference loss adds the two terms."""
    w, l, y_ref, _ = logps
    delta, weight = 2.0, 0.3
    hinge, _ = losses.hinge_loss(w, l, gamma=1 / delta)
    term, _ = losses.target_regularization(y_ref, weight * 1 / delta)
    expected = (np.maximum(0, delta - w + l) - weight * y_ref).mean() / delta
    np.testing.assert_allclose(float(hinge + term), expected, rtol=1e-5)


def test_mask_excludes_padding_pairs(logps):
    w, l, ref_w, ref_l = logps
    mask = np.arange(64) < 40
    masked, _ = losses.sigmoid_norm_loss(w, l, ref_w, ref_l, gamma=0.5, mask=mask)
    subset, _ = losses.sigmoid_norm_loss(w[:40], l[:40], ref_w[:40], ref_l[:40], gamma=0.5)
    np.testing.assert_allclose(float(masked), float(subset), rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.05, 0.5])
def test_ipo_pulls_the_log_ratio_margin_to_one_over_two_gamma(logps, gamma):
    w, l, ref_w, ref_l = logps
    h = (w - ref_w) - (l - ref_l)
    loss, metrics = losses.ipo_loss(w, l, ref_w, ref_l, gamma=gamma)
    np.testing.assert_allclose(float(loss), ((h - 1 / (2 * gamma)) ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["rewards/margin"]), (gamma * h).mean(), rtol=1e-4,
                               atol=1e-6)
    grad_w = jax.grad(lambda c: losses.ipo_loss(c, l, ref_w, ref_l, gamma=gamma)[0])(w)
    np.testing.assert_array_equal(np.sign(np.asarray(grad_w)), np.sign(h - 1 / (2 * gamma)))


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_conservative_sigmoid_norm_smooths_the_labels(logps, epsilon):
    w, l, ref_w, ref_l = logps
    z = 0.5 * ((w - ref_w) - (l - ref_l))
    expected = (-(1 - epsilon) * log_sigmoid(z) - epsilon * log_sigmoid(-z)).mean()
    loss, _ = losses.conservative_sigmoid_norm_loss(w, l, ref_w, ref_l, gamma=0.5,
                                                    label_smoothing=epsilon)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    if epsilon == 0.0:
        plain, _ = losses.sigmoid_norm_loss(w, l, ref_w, ref_l, gamma=0.5)
        assert float(plain) == float(loss)


LOSS_SETTINGS = {"sigmoid_norm": {}, "hinge": {}, "hinge_norm": {}, "ipo": {},
                 "conservative_sigmoid_norm": {"label_smoothing": 0.1}}


@pytest.mark.parametrize("name", sorted(LOSS_SETTINGS))
def test_a_nan_in_a_padding_pair_reaches_neither_loss_nor_gradient(name, logps):
    w, l, ref_w, ref_l = (np.array(x) for x in logps)
    mask = np.arange(64) < 40
    for array in (w, l, ref_w, ref_l):
        array[50] = np.nan
    ref_l[60] = -np.inf
    loss_fn = losses.preference_loss(name, gamma=0.1, **LOSS_SETTINGS[name])
    loss, metrics = loss_fn(w, l, ref_w, ref_l, mask=mask)
    subset, _ = loss_fn(w[:40], l[:40], ref_w[:40], ref_l[:40])
    np.testing.assert_allclose(float(loss), float(subset), rtol=1e-6)
    assert all(np.isfinite(float(value)) for value in metrics.values())
    grads = jax.grad(lambda c, r: loss_fn(c, r, ref_w, ref_l, mask=mask)[0], argnums=(0, 1))(
        jnp.asarray(w), jnp.asarray(l))
    for grad in grads:
        assert np.isfinite(np.asarray(grad)).all()
        assert (np.asarray(grad)[40:] == 0).all()


@pytest.mark.parametrize("name", ["sigmoid_norm", "hinge", "hinge_norm",
                                  "conservative_sigmoid_norm"])
def test_gradient_step_raises_chosen_over_rejected(name, logps):
    w, l, ref_w, ref_l = (jnp.asarray(x) for x in logps)
    loss_fn = losses.preference_loss(name, gamma=0.05, **LOSS_SETTINGS[name])

    def loss_of(chosen, rejected):
        return loss_fn(chosen, rejected, ref_w, ref_l)[0]

    grad_w, grad_l = jax.grad(loss_of, argnums=(0, 1))(w, l)
    assert (np.asarray(grad_w) <= 0).all() and (np.asarray(grad_l) >= 0).all()
    assert (np.asarray(grad_w) < 0).any()
    new_w, new_l = w - 10.0 * grad_w, l - 10.0 * grad_l
    before = (w - ref_w) - (l - ref_l)
    after = (new_w - ref_w) - (new_l - ref_l)
    assert float((after - before).min()) >= 0 and float((after - before).max()) > 0
    assert float(loss_of(new_w, new_l)) < float(loss_of(w, l))


def test_token_cross_entropy_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
    targets = rng.integers(1, 11, size=(3, 5))
    targets[1, 3:] = 0
    loss, metrics = losses.token_cross_entropy(logits, targets)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    weights = targets > 0
    np.testing.assert_allclose(float(loss), -(picked * weights).sum() / weights.sum(), rtol=1e-5)
    assert float(metrics["tokens"]) == weights.sum()


def test_unknown_loss_name_and_misplaced_smoothing_are_refused():
    with pytest.raises(ValueError, match="Unknown preference loss 'dpo'"):
        losses.preference_loss("dpo", gamma=0.1)
    with pytest.raises(ValueError, match="label_smoothing=0.1 is for the losses "
                                         r"\('conservative_sigmoid_norm',\), not 'hinge'"):
        losses.preference_loss("hinge", gamma=0.1, label_smoothing=0.1)
