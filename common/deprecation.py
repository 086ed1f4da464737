"""Every deprecated name and argument of transferkit, in one place.

Old names keep working with a :class:`DeprecationWarning` that names the replacement, so a user's code
runs on while they move. A module lists its renamed attributes in a :func:`renamed` table and
delegates its ``__getattr__`` to it; a renamed argument or hook calls :func:`warn`.

Example:
    >>> import warnings
    >>> getattr_ = renamed("pkg", {"Old": ("New", lambda: "the new thing")})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     result = getattr_("Old")
    >>> result, str(caught[0].message)
    ('the new thing', 'pkg.Old is deprecated; use pkg.New instead')
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def warn(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``."""
    warnings.warn(f"{old} is deprecated; use {new} instead", DeprecationWarning, stacklevel=stacklevel)


def renamed(module: str, names: dict[str, tuple[str, Callable[[], Any]]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for renamed attributes: ``{"AuditConfig": ("EventAuditConfig", lambda: EventAuditConfig)}``."""

    def getattr_(name: str) -> Any:
        if name in names:
            new, get = names[name]
            warn(f"{module}.{name}", f"{module}.{new}")
            return get()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return getattr_


# Fields TrainConfig had before each strategy got its own settings dataclass. They are still accepted
# (with a DeprecationWarning) and handed to the strategy by the task's ``fit``.
LEGACY_TRAIN_FIELDS = ("strategy", "probe_epochs", "top_k_blocks", "llrd_decay", "lora_r", "lora_alpha", "lora_dropout",
                       "lora_targets", "feature_cache")


def pop_legacy_train_fields(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the strategy settings TrainConfig used to hold out of ``kwargs`` (warning once if any)."""
    legacy = {k: kwargs.pop(k) for k in list(kwargs) if k in LEGACY_TRAIN_FIELDS}
    if legacy:
        warnings.warn(f"TrainConfig({', '.join(legacy)}=...) is deprecated: strategy settings belong to the "
                      "strategy (get_strategy('lora', r=8), or fit(..., lora_r=8))", DeprecationWarning, stacklevel=3)
    return legacy
