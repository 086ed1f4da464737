"""Built-in interactions for the recsys demo and tests: two periods, a second domain, item content.

Users and items live in one latent space. A user picks items with probability proportional to
``exp(scale * u . v / sqrt(dim) + popularity_bias)`` (sampled without replacement with the Gumbel
top-k trick), so there is real low-rank structure plus a heavy popularity skew.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transferkit.recsys import Interactions

__all__ = ["SyntheticWorld", "checkerboard", "make_world"]


@dataclass
class SyntheticWorld:
    """Everything the demo needs, with ids ``u<n>`` / ``i<n>`` (source) and ``t<n>`` (target items).

    Attributes:
        period1: history, times in [0, 1).
        period2: the new period, times in [1, 2): tastes drifted, new users and new items appeared.
        target: a second domain (its own items) whose users are partly the period-1 users.
        content: one content-embedding row per id in ``content_ids`` (all source items).
        content_ids: item ids of ``content``'s rows.
        new_items: period-2 item ids that did not exist in period 1.
        new_users: period-2 user ids that did not exist in period 1.
        info: the generator's parameters.
    """

    period1: Interactions
    period2: Interactions
    target: Interactions
    content: np.ndarray
    content_ids: list
    new_items: list
    new_users: list
    info: dict = field(default_factory=dict)


def _sample(rng, users, items, bias, n_events, scale, t0):
    """Gumbel top-k per user: distinct items drawn with softmax(logits) probabilities."""
    dim = users.shape[1]
    logits = scale * users @ items.T / np.sqrt(dim) + bias[None, :]
    logits += rng.gumbel(size=logits.shape)
    rows, cols = [], []
    for u, n in enumerate(n_events):
        n = int(min(n, items.shape[0]))
        top = np.argpartition(-logits[u], n - 1)[:n]
        rows.append(np.full(n, u))
        cols.append(top)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return rows, cols, t0 + rng.random(len(rows))


def _frame(rows, cols, times, user_names, item_names) -> Interactions:
    df = pd.DataFrame({"user": np.asarray(user_names, dtype=object)[rows],
                       "item": np.asarray(item_names, dtype=object)[cols], "time": times})
    return Interactions.from_frame(df, time="time")


def make_world(
    n_users: int = 2000,
    n_items: int = 1000,
    dim: int = 16,
    events_per_user: float = 30.0,
    drift: float = 0.3,
    new_user_fraction: float = 0.2,
    new_item_fraction: float = 0.15,
    target_items: int = 500,
    target_events_per_user: float = 6.0,
    content_dim: int = 48,
    content_noise: float = 0.5,
    scale: float = 2.5,
    popularity_skew: float = 1.5,
    seed: int = 0,
) -> SyntheticWorld:
    """Generate a small recommendation world (see :class:`SyntheticWorld`).

    Args:
        n_users, n_items: period-1 catalogue sizes.
        dim: true latent dimension.
        events_per_user: mean events per user per period (log-normal spread, at least 3).
        drift: how far each returning user's taste moves in period 2 (0 = none, 1 = a new person).
        new_user_fraction, new_item_fraction: period-2 newcomers relative to period-1 sizes.
        target_items: catalogue size of the second domain, where users have
            ``target_events_per_user`` events on average (a sparse domain).
        content_dim, content_noise: item content = tanh(v A) + noise, a non-linear view of the item.
        scale: strength of taste relative to popularity.
        popularity_skew: standard deviation of the log item popularity.
        seed: everything is drawn from this seed.

    Example:
        >>> world = make_world(n_users=50, n_items=40, seed=0)
        >>> world.period1.n_users, world.content.shape[1]
        (50, 48)
    """
    rng = np.random.default_rng(seed)
    n_new_u, n_new_i = int(n_users * new_user_fraction), int(n_items * new_item_fraction)
    users = rng.standard_normal((n_users + n_new_u, dim))
    items = rng.standard_normal((n_items + n_new_i, dim))
    bias = rng.normal(0.0, popularity_skew, n_items + n_new_i)  # log-normal item popularity

    def counts(n, mean):
        return np.maximum(3, rng.lognormal(np.log(mean), 0.6, n)).astype(int)

    user_names = [f"u{i}" for i in range(len(users))]
    item_names = [f"i{i}" for i in range(len(items))]
    r, c, t = _sample(rng, users[:n_users], items[:n_items], bias[:n_items],
                      counts(n_users, events_per_user), scale, 0.0)
    period1 = _frame(r, c, t, user_names[:n_users], item_names[:n_items])

    # period 2: 70% of users return with drifted tastes, newcomers join; new items trend upwards
    returning = np.sort(rng.choice(n_users, int(0.7 * n_users), replace=False))
    active = np.concatenate([returning, np.arange(n_users, n_users + n_new_u)])
    drifted = np.sqrt(1 - drift**2) * users[active] + drift * rng.standard_normal((len(active), dim))
    bias2 = bias + rng.normal(0.0, 0.5, len(bias))
    bias2[n_items:] += 1.0
    r, c, t = _sample(rng, drifted, items, bias2, counts(len(active), events_per_user), scale, 1.0)
    period2 = _frame(r, c, t, [user_names[a] for a in active], item_names)

    # a second domain in the same taste space, shared by 60% of the period-1 users
    shared = np.sort(rng.choice(n_users, int(0.6 * n_users), replace=False))
    t_items = rng.standard_normal((target_items, dim))
    t_bias = rng.normal(0.0, 1.0, target_items)
    r, c, t = _sample(rng, users[shared], t_items, t_bias,
                      counts(len(shared), target_events_per_user), scale, 0.0)
    target = _frame(r, c, t, [user_names[s] for s in shared], [f"t{i}" for i in range(target_items)])

    mix = rng.standard_normal((dim, content_dim)) / np.sqrt(dim)
    content = np.tanh(items @ mix * 1.5) + content_noise * rng.standard_normal((len(items), content_dim))
    info = {k: v for k, v in locals().items() if k in make_world.__code__.co_varnames[: make_world.__code__.co_argcount]}
    return SyntheticWorld(
        period1=period1, period2=period2, target=target, content=content.astype(np.float32),
        content_ids=item_names, new_items=item_names[n_items:], new_users=user_names[n_users:], info=info,
    )


def checkerboard(n_users: int = 20, items_per_group: int = 5, user_prefix: str = "u") -> tuple[Interactions, dict]:
    """A tiny matrix whose right answer is known: each user's best unseen item is fixed.

    Users alternate between two groups; group ``g`` owns items ``g * items_per_group ...``. Each user
    has seen every item of their group except one (``u % items_per_group``), and nothing else, so
    with seen items filtered their top recommendation must be that missing item.

    Returns:
        (interactions, expected) where ``expected[user_id]`` is the item id that must come first.
    """
    users, items, expected = [], [], {}
    for u in range(n_users):
        group, hole = u % 2, (u // 2) % items_per_group
        name = f"{user_prefix}{u}"
        for j in range(items_per_group):
            item = group * items_per_group + j
            if j == hole:
                expected[name] = item
            else:
                users.append(name)
                items.append(item)
    return Interactions.from_arrays(users, items), expected
