"""Least-squares fold-in: solve rows of one embedding table with the other table held fixed.

This is one half-step of implicit's ALS (Hu, Koren & Volinsky 2008), written out so it can run for a
handful of new rows at serving time, and so that tables from BPR/LMF (which carry constant bias
columns) can be folded into too.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["solve_rows"]


def solve_rows(
    other: np.ndarray,
    rows: sp.csr_matrix,
    regularization: float,
    alpha: float = 1.0,
    fixed_columns: dict[int, float] | None = None,
) -> np.ndarray:
    """Solve one factor row per row of ``rows`` against the fixed factors ``other``.

    For each row ``r`` (e.g. a user's interactions over items) this minimises
    ``sum_i c_i (p_i - x . y_i)^2 + regularization * |x_free|^2`` over all columns ``i``, with
    ``p_i = 1`` and ``c_i = alpha * r_i`` where ``r_i > 0``, and ``p_i = 0``, ``c_i = 1`` elsewhere.
    This is exactly the user update of implicit's ALS (which also uses ``c = alpha * r``), so
    folding a user into converged ALS tables gives the row a full refit gives.

    Args:
        other: the fixed table, shape (n_columns_of_rows, dim).
        rows: CSR of shape (n_rows, n_columns_of_rows), non-negative weights.
        regularization: L2 penalty (implicit's ``regularization``).
        alpha: confidence scale (implicit's ``alpha``).
        fixed_columns: columns of the solved row that keep a constant value (BPR's and LMF's
            "always 1" bias columns); they are not penalised and stay at that value.

    Returns:
        float32 array of shape (n_rows, dim); rows with no interactions come back as zeros in the
        free columns (the least-squares answer when every preference is 0).
    """
    other = np.asarray(other, dtype=np.float64)
    dim = other.shape[1]
    fixed = dict(sorted((c % dim, v) for c, v in (fixed_columns or {}).items()))
    free = np.array([c for c in range(dim) if c not in fixed], dtype=np.int64)
    y = other[:, free]
    # the fixed columns contribute a constant offset o_i = sum_j v_j * other[i, j] to every score
    offset = np.zeros(len(other))
    for col, value in fixed.items():
        offset += value * other[:, col]
    gram = y.T @ y + regularization * np.eye(len(free))
    base_rhs = -(offset @ y)  # sum over all items of c=1, p=0 terms: -o_i * y_i
    out = np.zeros((rows.shape[0], dim), dtype=np.float32)
    for col, value in fixed.items():
        out[:, col] = value
    rows = sp.csr_matrix(rows)
    for r in range(rows.shape[0]):
        start, end = rows.indptr[r], rows.indptr[r + 1]
        if start == end:
            continue
        idx = rows.indices[start:end]
        conf = alpha * rows.data[start:end].astype(np.float64)
        yi = y[idx]
        a = gram + (yi * (conf - 1.0)[:, None]).T @ yi
        # observed items: c*p*y - (c-1)*o*y on top of the all-items base term
        b = base_rhs + (conf - (conf - 1.0) * offset[idx]) @ yi
        out[r, free] = np.linalg.solve(a, b)
    return out
