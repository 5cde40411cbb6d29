"""Where one row goes at its node's threshold split: shared by the row loops."""

from __future__ import annotations

from numba import njit


@njit(inline="always")
def threshold_child(Xb, i, node, feature, split_bin, missing_left, left, right):
    """The child of ``node`` that row ``i`` goes to, or ``node`` if it does not split.

    The tables are one tree's rows (1-D, indexed by node); bin 0 holds missing
    values, which go left where ``missing_left`` is set.
    """
    f = feature[node]
    if f < 0:
        return node
    b = Xb[i, f]
    go_left = (missing_left[node] != 0) if b == 0 else (b <= split_bin[node])
    return left[node] if go_left else right[node]
