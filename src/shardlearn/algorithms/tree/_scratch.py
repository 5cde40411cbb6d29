"""Large per-level arrays handed out again once nothing holds them.

A tree level allocates its histograms afresh: on a worker, the sums of its shards;
on the coordinator, the workers' sums added up with the siblings derived. Arrays
that large come from the kernel as new pages, and touching them costs a page
fault per page (with numpy's transparent huge pages, the kernel zeroing 2 MB a
fault). A random forest's deep levels hold thousands of node histograms at once:
measured on 2 cores (160,000 x 28, 50 trees in one pass, depth 10), 20,000-36,000
faults and 1.0-1.6 s of system time a fit, about a third of its CPU time; without
huge pages, 650,000 faults and 4.5 s.

:class:`ScratchPool` keeps a few buffers and lends out views of them. A buffer
is lent again only when no array still refers to it (CPython's reference count:
every view of it holds one), so an array handed on (a reply waiting to be sent,
the coordinator holding a level's histograms as the next level's parents) is
never overwritten: the pool then allocates another.

One pool serves the whole process (:data:`POOL`: the coordinator and every worker
thread of the process, under a lock) and outlives a fit, so that the next fit in
the process (a worker's next fit, a search over parameters) touches no new memory:
the same forest's second fit in-process took 1.15-1.27 s with no page faults,
against 1.8-2.5 s and 0.1-1.1 s of system time with fresh arrays (most of a
forest's levels come once a fit, so pools per fit saved little). It keeps at most :data:`MAX_BUFFERS` buffers and
:data:`MAX_KEPT_BYTES` bytes, for the life of the process.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

#: Buffers kept by a pool: each of 2 workers' level and the coordinator's level
#: and the one held as parents, plus spares.
MAX_BUFFERS = 8
#: Arrays smaller than this are allocated as usual (from the allocator's reused
#: memory: no page faults to save).
MIN_BYTES = 1 << 20
#: Most bytes a pool keeps; larger buffers are lent once and not kept.
MAX_KEPT_BYTES = 512 << 20


class ScratchPool:
    """Lend arrays from reused buffers (see the module docstring).

    Dropping the pool frees its buffers once their views are gone. Thread-safe:
    a buffer is found free and its view made under one lock.
    """

    __slots__ = ("_bufs", "_lock")

    def __init__(self):
        self._bufs: list[np.ndarray] = []
        self._lock = threading.Lock()

    def __reduce__(self):
        # Never ship buffers: a copy of a pool is an empty pool.
        return (ScratchPool, ())

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
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
        return len(kept) < MAX_BUFFERS and sum(b.nbytes for b in kept) + nbytes <= MAX_KEPT_BYTES

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

#: The process's pool of per-level histograms.
POOL = ScratchPool()
