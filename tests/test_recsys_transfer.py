"""Transfer: fold-in against implicit and a full refit, warm start, cross-domain, content cold start."""

import numpy as np
import pytest

from transferkit.demos.recsys_world import checkerboard, make_world
from transferkit.recsys import (
    ContentMapper,
    Interactions,
    align,
    cross_domain,
    fold_in_users,
    pretrain,
    warm_start,
)
from transferkit.recsys.foldin import solve_rows

EXACT = {"factors": 4, "regularization": 5.0, "alpha": 5.0, "use_cg": False, "num_threads": 1}


@pytest.fixture(scope="module")
def board():
    return checkerboard()


@pytest.fixture(scope="module")
def small_world():
    return make_world(n_users=300, n_items=150, dim=8, seed=1)


def _rows(inter, users):
    return inter.matrix[[inter.user_index[u] for u in users]]


def test_fold_in_solves_implicits_own_user_equation():
    import implicit
    from threadpoolctl import threadpool_limits

    world = make_world(n_users=60, n_items=40, dim=4, seed=3)
    m = world.period1.matrix
    with threadpool_limits(1, "blas"):
        als = implicit.cpu.als.AlternatingLeastSquares(factors=6, regularization=0.3, alpha=4.0, iterations=3,
                                                       random_state=0, num_threads=1)
        als.fit(m, show_progress=False)
        expected = np.stack([als.recalculate_user(u, m[u]) for u in range(5)]).reshape(5, -1)
    got = solve_rows(als.item_factors, m[:5], regularization=0.3, alpha=4.0)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


def test_fold_in_of_a_user_equals_the_full_refit(small_world):
    inter = small_world.period1
    full = pretrain(inter, iterations=60, seed=0, **EXACT)
    users = inter.user_ids[:10]
    # (a) the refit's own rows are the least-squares fold-in against its items (ALS at convergence)
    folded = solve_rows(full.item_factors, _rows(inter, users), 5.0, 5.0)
    np.testing.assert_allclose(folded, full.user_factors[:10], atol=5e-3)
    # (b) fit without those users, fold them in at serving time, compare with the refit that saw them
    rest = inter.subset(~np.isin(inter.users, np.arange(10)))
    rest = Interactions.from_frame(rest.to_frame(), weight="weight")
    without = pretrain(rest, iterations=60, seed=0, **EXACT)
    served = fold_in_users(without, inter.subset(np.isin(inter.users, np.arange(10))))
    a = served.recommend(users, N=10, history=inter)[0]
    b = full.recommend(users, N=10, history=inter)[0]
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)])
    assert overlap >= 0.8, overlap
    assert served.user_ids[-10:] == users and served.user_counts[-1] > 0


def test_warm_start_keeps_known_users_and_adds_new_ones(board):
    inter, expected = board
    old = pretrain(inter, factors=4, iterations=15, num_threads=1)
    # new period: two newcomers who behave like u0 (group 0, hole at item 0) and u1; u16..u19 stay away
    u0 = [inter.item_ids[i] for i in inter.matrix[inter.user_index["u0"]].indices]
    u1 = [inter.item_ids[i] for i in inter.matrix[inter.user_index["u1"]].indices]
    returning = inter.subset(inter.users < 16)
    new = Interactions.concat([returning, Interactions.from_arrays(["n0"] * len(u0) + ["n1"] * len(u1), u0 + u1)])
    seen = []
    warm = warm_start(old, new, iterations=5, num_threads=1, callback=lambda it, s, t: seen.append((it, t)))
    assert warm.user_ids[:20] == old.user_ids and warm.user_ids[20:] == ["n0", "n1"]
    # the callback sees what warm_start returns: after the last iteration, the same tables
    assert [it for it, _ in seen] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(seen[-1][1].user_factors, warm.user_factors)
    everyone = Interactions.concat([inter, new])
    users = list(expected) + ["n0", "n1"]
    ids, _ = warm.recommend(users, N=1, history=everyone)
    assert ids[:, 0].tolist() == [expected[u] for u in expected] + [expected["u0"], expected["u1"]]
    # users absent from the new period keep their pretrained rows exactly (ALS would zero them)
    np.testing.assert_array_equal(warm.user_factors[16:20], old.user_factors[16:20])
    assert warm.user_counts[16] == old.user_counts[16] and warm.meta["transfer"] == "warm_start"
    assert warm.meta["align_seconds"] >= 0


def test_align_folds_new_rows_and_keeps_known_rows(board):
    inter, _ = board
    old = pretrain(inter, factors=4, iterations=15, num_threads=1, model="bpr", learning_rate=0.05)
    # a new item 10 liked by group-0 users: it must land next to group-0 items
    new = Interactions.from_arrays(["u0", "u2", "u4", "u6"], [10, 10, 10, 10])
    aligned, reindexed = align(old, new)
    assert aligned.item_ids == old.item_ids + [10] and reindexed.item_ids == aligned.item_ids
    np.testing.assert_array_equal(aligned.item_factors[:10], old.item_factors)
    np.testing.assert_array_equal(aligned.user_factors[:, -1], 1.0)  # BPR's constant column survives
    g0 = aligned.user_factors[[0, 2, 4]] @ aligned.item_factors[10]
    g1 = aligned.user_factors[[1, 3, 5]] @ aligned.item_factors[10]
    assert g0.min() > g1.max()
    # regression: an item touched only by new users used to count as solved in step 1 and stay all
    # zeros; it must be solved in step 3 from the newcomers' folded-in rows
    u0_items = [inter.item_ids[i] for i in inter.matrix[inter.user_index["u0"]].indices]
    newcomers = Interactions.from_arrays(["n0"] * 5 + ["u0"], u0_items + [11] + [1])
    aligned, _ = align(old, newcomers)
    assert np.abs(aligned.item_factors[aligned.item_index[11], :-1]).sum() > 0
    with pytest.raises(ValueError, match="share no user or item ids"):
        align(old, Interactions.from_arrays(["zz"], ["qq"]))


def test_cross_domain_serves_source_users_with_no_target_history(board):
    inter, _ = board
    source = pretrain(inter, factors=4, iterations=15, num_threads=1)
    # target domain: items "A*" liked by group 0, "B*" by group 1; only users u0..u9 are active there
    users, items = [], []
    for u in range(10):
        for j in range(3):
            users.append(f"u{u}")
            items.append(("A" if u % 2 == 0 else "B") + str(j))
    target = Interactions.from_arrays(users, items)
    tables = cross_domain(source, target)
    assert set(tables.item_ids) == {"A0", "A1", "A2", "B0", "B1", "B2"} and len(tables.user_ids) == 20
    # u10..u19 never touched the target domain: their source taste picks the right target group
    ids, _ = tables.recommend([f"u{u}" for u in range(10, 20)], N=1, filter_seen=False)
    assert [i[0] for i in ids[:, 0]] == ["A", "B"] * 5
    tuned = cross_domain(source, target, iterations=2, num_threads=1)
    assert tuned.meta["iterations"] == 2


@pytest.mark.parametrize("kind", ["ridge", "mlp"])
def test_content_mapper_gets_items_with_no_interactions_recommended(board, kind):
    inter, _ = board
    tables = pretrain(inter, factors=4, iterations=15, num_threads=1)
    rng = np.random.default_rng(0)
    group = np.array([0] * 5 + [1] * 5)
    content = np.eye(2)[group] + 0.05 * rng.standard_normal((10, 2))
    mapper = ContentMapper(kind=kind, alpha=0.1 if kind == "ridge" else 1e-4, hidden=16, seed=0)
    mapper.fit(tables, inter.item_ids, content)
    bigger = mapper.add_items(tables, ["newA", "newB"], np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert bigger.item_ids[-2:] == ["newA", "newB"] and bigger.item_counts[-1] == 0
    ids, _ = bigger.recommend([f"u{u}" for u in range(6)], N=1, items=["newA", "newB"])
    assert ids[:, 0].tolist() == ["newA", "newB"] * 3


def test_content_mapper_bad_inputs(board):
    inter, _ = board
    tables = pretrain(inter, factors=4, iterations=2, num_threads=1)
    with pytest.raises(ValueError, match="one row per item id"):
        ContentMapper().fit(tables, inter.item_ids, np.ones((3, 2)))
    bad = np.ones((10, 2))
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in rows \[4\]"):
        ContentMapper().fit(tables, inter.item_ids, bad)
    with pytest.raises(ValueError, match="not fitted"):
        ContentMapper().predict(np.ones((1, 2)))
    with pytest.raises(ValueError, match="kind must be"):
        ContentMapper(kind="knn")


def test_ridge_leave_one_out_shortcut_equals_refitting_without_each_item():
    from transferkit.recsys.content import loo_errors

    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((12, 4)), rng.standard_normal((12, 3))
    alphas = [0.1, 1.0, 10.0]
    brute = []
    for a in alphas:
        err = 0.0
        for i in range(12):
            keep = np.arange(12) != i
            coef = np.linalg.solve(z[keep].T @ z[keep] + a * np.eye(4), z[keep].T @ y[keep])
            err += float(((y[i] - z[i] @ coef) ** 2).sum())
        brute.append(err)
    np.testing.assert_allclose(loo_errors(z, y, alphas), brute, rtol=1e-8)
