"""Arrays lent from reused buffers, handed out again once nothing holds them.

Large arrays allocated afresh come from the kernel as new pages, and touching
them costs a page fault per page (with numpy's transparent huge pages, the kernel
zeroing 2 MB a fault). A process that makes arrays of the same few sizes over and
over (a tree level's histograms, a worker's replies copied out on the driver)
pays those faults every time. :class:`ScratchPool` keeps a few buffers and lends
out views of them. A buffer is lent again only when no array still refers to it
(CPython's reference count: every view of it holds one), so an array handed on
(a reply waiting to be read, a level's histograms held as the next level's
parents) is never overwritten: the pool then allocates another.

A pool keeps at most ``max_buffers`` buffers and ``max_kept_bytes`` bytes (by
default :data:`MAX_BUFFERS` and :data:`MAX_KEPT_BYTES`), for its life.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

#: Buffers a pool keeps by default.
MAX_BUFFERS = 8
#: Arrays smaller than this are allocated as usual (from the allocator's reused
#: memory: no page faults to save).
MIN_BYTES = 1 << 20
#: Most bytes a pool keeps by default; larger buffers are lent once and not kept.
MAX_KEPT_BYTES = 512 << 20


class ScratchPool:
    """Lend arrays from reused buffers (see the module docstring).

    ``max_buffers``, ``max_kept_bytes``: the caps; None, the module's defaults
    (read at each call). Dropping the pool frees its buffers once their views are
    gone. Thread-safe: a buffer is found free and its view made under one lock.
    """

    __slots__ = ("_bufs", "_lock", "max_buffers", "max_kept_bytes")

    def __init__(self, max_buffers: int | None = None, max_kept_bytes: int | None = None):
        self._bufs: list[np.ndarray] = []
        self._lock = threading.Lock()
        self.max_buffers = max_buffers
        self.max_kept_bytes = max_kept_bytes

    def __reduce__(self):
        # Never ship buffers: a copy of a pool is an empty pool.
        return (ScratchPool, (self.max_buffers, self.max_kept_bytes))

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``."""
        dtype = np.dtype(dtype)
        # math.prod, not np.prod: 0.3 us against 5-10, on a call made several times
        # a tree level (np.prod was a tenth of a boosting coordinator's time).
        dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
        nbytes = int(math.prod(dims)) * dtype.itemsize
        if nbytes < MIN_BYTES:
            return np.empty(shape, dtype)
        with self._lock:
            return self._buffer(nbytes)[:nbytes].view(dtype).reshape(shape)

    def zeros(self, shape, dtype) -> np.ndarray:
        """A zeroed C-contiguous array of ``shape`` and ``dtype``."""
        out = self.empty(shape, dtype)
        out.fill(0)
        return out

    def _refs(self, i: int) -> int:
        return sys.getrefcount(self._bufs[i])

    def _free(self, i: int) -> bool:
        # As many references as a buffer nothing else holds (the list's and the
        # argument's on CPython 3.11; measured at import, see _FREE_REFS).
        return self._refs(i) <= _FREE_REFS

    def _buffer(self, nbytes: int) -> np.ndarray:
        free = [i for i in range(len(self._bufs)) if self._free(i)]
        fitting = [i for i in free if self._bufs[i].nbytes >= nbytes]
        if fitting:
            # The smallest that fits: big buffers stay for big levels.
            return self._bufs[min(fitting, key=lambda i: self._bufs[i].nbytes)]
        buf = np.empty(nbytes, np.uint8)
        # Room for it: drop free buffers, the smallest first (sizes grow with depth).
        drop: set[int] = set()
        for i in sorted(free, key=lambda i: self._bufs[i].nbytes):
            if self._room(nbytes, drop):
                break
            drop.add(i)
        if self._room(nbytes, drop):       # else lent once, and nothing dropped for it
            self._bufs = [b for i, b in enumerate(self._bufs) if i not in drop]
            self._bufs.append(buf)
        return buf

    def _room(self, nbytes: int, drop) -> bool:
        kept = [b for i, b in enumerate(self._bufs) if i not in drop]
        most = MAX_BUFFERS if self.max_buffers is None else self.max_buffers
        cap = MAX_KEPT_BYTES if self.max_kept_bytes is None else self.max_kept_bytes
        return len(kept) < most and sum(b.nbytes for b in kept) + nbytes <= cap

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers kept."""
        return sum(b.nbytes for b in self._bufs)


def _free_refs() -> int:
    probe = ScratchPool()
    probe._bufs.append(np.empty(1, np.uint8))
    return probe._refs(0)


#: References a buffer has when nothing else holds it (interpreters count borrowed
#: references differently: measured, not assumed).
_FREE_REFS = _free_refs()
