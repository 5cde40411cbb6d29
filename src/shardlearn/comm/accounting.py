"""Bytes that a payload moves between driver and workers (logical payload size)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

_SCALAR_BYTES = 8
_OPAQUE_BYTES = 64  # functions, small objects: a reference, not their contents


def payload_nbytes(obj) -> int:
    """Size of the arrays and scalars inside ``obj`` (lists, tuples, dicts nested)."""
    if obj is None:
        return 0
    # Cheapest and most common checks first: this runs on every call's arguments.
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (int, float, bool, np.generic)):
        return _SCALAR_BYTES
    if isinstance(obj, (list, tuple)):
        return sum(map(payload_nbytes, obj))
    if isinstance(obj, dict):
        return sum(payload_nbytes(k) + payload_nbytes(v) for k, v in obj.items())
    if isinstance(obj, (str, bytes)):
        return len(obj)
    if sp.issparse(obj):
        return int(obj.data.nbytes + obj.indices.nbytes + obj.indptr.nbytes)
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, (int, np.integer)):
        return int(nbytes)
    return _OPAQUE_BYTES
