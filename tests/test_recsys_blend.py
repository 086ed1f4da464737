"""The popularity blend, settings chosen on dev only, and the warm start that down-weights the old period."""

import numpy as np
import pytest

import transferkit.recsys.tuning as tuning
from transferkit.demos.recsys_world import checkerboard, make_world
from transferkit.recsys import (
    EASE,
    BlendConfig,
    EmbeddingTables,
    Interactions,
    PopularityBlend,
    dev_split,
    fit_blend,
    pretrain,
    select_on_dev,
    split_by_time,
    warm_start,
)


def _identity_tables():
    # u0 prefers a > b > c; the prior (counts) says c > b > a
    return EmbeddingTables(np.array([[3.0, 2.0, 1.0]], np.float32), np.eye(3, dtype=np.float32), ["u0"],
                           ["a", "b", "c"], user_counts=np.ones(1, np.int64))


def test_the_weight_moves_the_ranking_from_the_model_to_the_prior():
    tables = _identity_tables()
    prior = Interactions.from_arrays(["x", "y", "z", "x", "y", "x"], ["c", "c", "c", "b", "b", "a"])
    ranked = {w: PopularityBlend(tables, prior, weight=w).recommend(["u0"], N=3, filter_seen=False)[0][0].tolist()
              for w in (0.0, 0.5, 100.0)}
    assert ranked[0.0] == ["a", "b", "c"] and ranked[100.0] == ["c", "b", "a"]
    # z-scores: model (1, 0, -1) * 1.2247, prior counts (1, 2, 3) -> (-1, 0, 1) * 1.2247; at 0.5 a still leads
    assert ranked[0.5] == ["a", "b", "c"]
    scores, _, _ = PopularityBlend(tables, prior, weight=0.5).score(["u0"], history=prior)
    np.testing.assert_allclose(scores[0], np.sqrt(1.5) * np.array([1 - 0.5, 0.0, -1 + 0.5]), rtol=1e-5)


def test_a_user_with_no_history_gets_the_decayed_prior_alone():
    tables = _identity_tables()
    # b was popular long ago, c lately: with a 1-unit half-life c wins, without decay b does
    prior = Interactions.from_arrays(["x", "y", "z", "w"], ["b", "b", "b", "c"], times=[0, 0, 0, 10])
    ids = PopularityBlend(tables, prior, weight=0.0, half_life=1.0).recommend(
        ["newcomer"], N=1, filter_seen=False, unknown="cold_start")[0]
    assert ids[0, 0] == "c"
    ids = PopularityBlend(tables, prior, weight=0.0).recommend(["newcomer"], N=1, filter_seen=False,
                                                              unknown="cold_start")[0]
    assert ids[0, 0] == "b"
    with pytest.raises(ValueError, match="weight must be >= 0"):
        PopularityBlend(tables, prior, weight=-1.0)


@pytest.fixture(scope="module")
def world():
    w = make_world(n_users=300, n_items=150, dim=8, seed=2)
    events = Interactions.concat([w.period1, w.period2])
    return split_by_time(events, test_fraction=0.2)


def test_the_blend_is_learned_on_the_dev_slice_and_never_sees_the_test(world, monkeypatch):
    train, test = world
    test_times = set(test.times.tolist())
    dev = dev_split(train, 0.1)
    fitted_on, judged_on = [], []
    real_evaluate = tuning.evaluate

    def spy(model, seen, held_out, **kwargs):
        judged_on.append(held_out)
        return real_evaluate(model, seen, held_out, **kwargs)

    def fit_model(events):
        fitted_on.append(events)
        return EASE(regularization=10.0).fit(events)

    monkeypatch.setattr(tuning, "evaluate", spy)
    config = BlendConfig(weights=[0.0, 1.0, 4.0], half_lives=[0.25, float("inf")], dev_fraction=0.1)
    blend = fit_blend(fit_model, train, config)
    # the model is fitted on the events before the dev slice, then once more on the whole training period
    assert len(fitted_on) == 2 and fitted_on[0].times.max() < dev.info["cutoff"] and fitted_on[1] is train
    # every trial is judged on the dev slice: training-period events at or after the cutoff, no test event
    assert len(judged_on) == 3 * 2
    for held_out in judged_on:
        assert held_out.times.min() >= dev.info["cutoff"] and not set(held_out.times.tolist()) & test_times
        assert len(held_out) == len(dev.test)
    # the chosen values are the dev slice's best, and they are reported
    best = max(blend.selection.trials, key=lambda t: t[1])
    assert blend.selection.params == best[0] and blend.weight == best[0]["weight"]
    assert blend.meta["blend_weight"] == blend.weight and blend.meta["dev"]["cutoff"] == dev.info["cutoff"]


def test_select_on_dev_fits_before_the_slice_and_reports_every_trial(world):
    train, _ = world
    seen = []

    def fit(events, regularization):
        seen.append(events.times.max())
        return EASE(regularization=regularization).fit(events)

    chosen = select_on_dev(fit, train, {"regularization": [1.0, 100.0]}, dev_fraction=0.2)
    cutoff = dev_split(train, 0.2).info["cutoff"]
    assert all(t < cutoff for t in seen) and len(chosen.trials) == 2
    assert chosen.score == max(score for _, score in chosen.trials) and "regularization=" in chosen.table()
    with pytest.raises(ValueError, match="grid is empty"):
        select_on_dev(fit, train, {})


def test_warm_start_trains_on_the_old_period_at_its_weight_and_decay():
    inter, _ = checkerboard()
    old = Interactions.from_arrays(inter.to_frame().user, inter.to_frame().item, times=np.zeros(len(inter)))
    tables = pretrain(old, factors=4, iterations=5, num_threads=1)
    new = Interactions.from_arrays(["u0", "newbie"], [0, 1], times=[20.0, 20.0])
    warm = warm_start(tables, new, iterations=1, num_threads=1, old_weight=0.5, half_life=10.0)
    # the training data: each old event 0.5 * 0.5 ** (20 / 10) = 0.125, each new one 1 (it is the newest)
    trained = warm.history
    is_new = trained.times == 20.0
    np.testing.assert_allclose(trained.weights[~is_new], 0.125)
    np.testing.assert_allclose(trained.weights[is_new], 1.0)
    assert len(trained) == len(old) + 2 and warm.meta["old_weight"] == 0.5 and warm.meta["half_life"] == 10.0
    # by default only the new events train (the old period lives on in the starting rows)
    assert len(warm_start(tables, new, iterations=1, num_threads=1).history) == 2
    loaded = EmbeddingTables(tables.user_factors, tables.item_factors, tables.user_ids, tables.item_ids)
    with pytest.raises(ValueError, match="pass history=<Interactions>"):
        warm_start(loaded, new, old_weight=0.5)
    assert len(warm_start(loaded, new, iterations=1, num_threads=1, old_weight=0.5, history=old).history) == len(old) + 2


def test_the_blend_keeps_the_checkerboards_answer_and_serves_strangers():
    # every checkerboard item has the same count, so the prior adds nothing and the model's answer stands
    inter, expected = checkerboard()
    blend = PopularityBlend(EASE(regularization=1.0).fit(inter), inter, weight=2.0)
    ids, scores = blend.recommend(list(expected), N=3)
    assert ids[:, 0].tolist() == list(expected.values()) and (np.diff(scores, axis=1) <= 0).all()
    u3 = [inter.item_ids[i] for i in inter.matrix[inter.user_index["u3"]].indices]
    ids, _ = blend.recommend(["stranger"], N=1, history=Interactions.from_arrays(["stranger"] * 4, u3),
                             unknown="cold_start")
    assert ids[0, 0] == expected["u3"]
