"""Large per-level arrays handed out again once nothing holds them.

A tree level allocates its histograms afresh: on a worker, the sums of its shards;
on the coordinator, the workers' sums added up with the siblings derived. Arrays
that large come from the kernel as new pages, and touching them costs a page
fault per page (with numpy's transparent huge pages, the kernel zeroing 2 MB a
fault). A random forest's deep levels are mostly empty histograms (a few hundred
rows a node against 1,280 bins): measured on 2 cores (160,000 x 28, 50 trees,
depth 10), 20,000-36,000 faults and 1.0-1.6 s of system time a fit, about a
third of its CPU time; without huge pages, 650,000 faults and 4.5 s.

:class:`ScratchPool` keeps a few buffers and lends out views of them. A buffer
is lent again only when no array still refers to it (CPython's reference count:
every view of it holds one), so an array handed on (a reply waiting to be sent,
the coordinator holding a level's histograms as the next level's parents) is
never overwritten: the pool then allocates another.

Pools are per thread (:func:`thread_pool`) and outlive a fit, so that the next
fit in the process (a worker's next fit, a search over parameters) touches no
new memory: the same forest's second fit took 1.35-1.57 s with 0.01-0.03 s of
system time, against 1.8-2.5 s and 0.1-1.1 s with buffers per fit (most of a
forest's levels come once a fit). A pool keeps at most :data:`MAX_BUFFERS`
buffers and :data:`MAX_KEPT_BYTES` bytes; its memory goes with its thread (the
local engine's workers end with their session, an actor's with the actor).
"""

from __future__ import annotations

import sys
import threading

import numpy as np

#: Buffers kept by one pool: a level's histograms and the previous level's (held as
#: parents), plus one spare.
MAX_BUFFERS = 3
#: Arrays smaller than this are allocated as usual (from the allocator's reused
#: memory: no page faults to save).
MIN_BYTES = 1 << 20
#: Most bytes one pool keeps; larger buffers are lent once and not kept.
MAX_KEPT_BYTES = 512 << 20

_threads = threading.local()


def thread_pool(name: str) -> ScratchPool:
    """This thread's pool ``name`` (made on first use)."""
    pools = getattr(_threads, "pools", None)
    if pools is None:
        pools = _threads.pools = {}
    pool = pools.get(name)
    if pool is None:
        pool = pools[name] = ScratchPool()
    return pool


class ScratchPool:
    """Lend arrays from reused buffers (see the module docstring).

    Dropping the pool frees its buffers once their views are gone.
    """

    __slots__ = ("_bufs",)

    def __init__(self):
        self._bufs: list[np.ndarray] = []

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < MIN_BYTES:
            return np.empty(shape, dtype)
        buf = self._buffer(nbytes)
        return buf[:nbytes].view(dtype).reshape(shape)

    def zeros(self, shape, dtype) -> np.ndarray:
        """A zeroed C-contiguous array of ``shape`` and ``dtype``."""
        out = self.empty(shape, dtype)
        out.fill(0)
        return out

    def _free(self, i: int) -> bool:
        # Two references when nothing else holds it: the list's and the argument's.
        return sys.getrefcount(self._bufs[i]) <= 2

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
        self._bufs = [b for i, b in enumerate(self._bufs) if i not in drop]
        if self._room(nbytes, ()):
            self._bufs.append(buf)
        return buf

    def _room(self, nbytes: int, drop) -> bool:
        kept = [b for i, b in enumerate(self._bufs) if i not in drop]
        return len(kept) < MAX_BUFFERS and sum(b.nbytes for b in kept) + nbytes <= MAX_KEPT_BYTES

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers kept."""
        return sum(b.nbytes for b in self._bufs)
