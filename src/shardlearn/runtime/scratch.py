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

Sizes often grow step by step (a tree's levels, each about twice the last). A
buffer made for a size reserves :data:`HEADROOM` times it (at most the pool's
byte cap) of address space, of which only what is lent gets touched: a larger
array later takes the same buffer, and only its new tail is first touched.
Fresh memory is dear on virtual machines: ``np.ones`` of 400 MB took 1.08 s of
system time on this project's 2-core VM (2.7 ms a MB). A forest's first fit
(160,000 x 28, 50 trees, depth 10, in-process) made 24 buffers of 2-78 MB, 763
MB in all, with an exact size each; 1.6 s of system time.

A pool keeps at most ``max_buffers`` buffers and ``max_kept_bytes`` touched bytes
(by default :data:`MAX_BUFFERS` and :data:`MAX_KEPT_BYTES`), for its life.
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
#: Most bytes a pool keeps by default (bytes lent at least once: the untouched
#: rest of a buffer's reserve costs no memory); larger buffers are lent once and not kept.
MAX_KEPT_BYTES = 512 << 20
#: A new buffer reserves this many times the size asked for (at most the byte cap).
HEADROOM = 64


class ScratchPool:
    """Lend arrays from reused buffers (see the module docstring).

    ``max_buffers``, ``max_kept_bytes``: the caps; None, the module's defaults
    (read at each call). Dropping the pool frees its buffers once their views are
    gone. Thread-safe: a buffer is found free and its view made under one lock.
    """

    __slots__ = ("_bufs", "_used", "_lock", "max_buffers", "max_kept_bytes")

    def __init__(self, max_buffers: int | None = None, max_kept_bytes: int | None = None):
        self._bufs: list[np.ndarray] = []       # each buffer's whole reserve
        self._used: list[int] = []              # the most bytes of it lent: touched
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
        touched = [i for i in free if self._used[i] >= nbytes]
        if touched:
            # No new pages; the smallest such, so big buffers stay for big arrays.
            return self._bufs[min(touched, key=lambda i: self._used[i])]
        roomy = [i for i in free if self._bufs[i].nbytes >= nbytes]
        if roomy:
            # Grow into the reserve of the one touched most: the fewest new pages.
            i = max(roomy, key=lambda i: self._used[i])
            buf = self._bufs[i]
            if self._make_room(nbytes - self._used[i], 0, [k for k in free if k != i]):
                # Dropping others may have moved it in the lists.
                i = next(k for k, b in enumerate(self._bufs) if b is buf)
                self._used[i] = nbytes
                return buf
        if not self._make_room(nbytes, 1, free):
            return np.empty(nbytes, np.uint8)      # lent once, and nothing dropped for it
        self._bufs.append(_reserve(nbytes, self._cap()))
        self._used.append(nbytes)
        return self._bufs[-1]

    def _cap(self) -> int:
        return MAX_KEPT_BYTES if self.max_kept_bytes is None else self.max_kept_bytes

    def _make_room(self, extra: int, new: int, droppable) -> bool:
        """Whether ``extra`` more touched bytes (in ``new`` more buffers) fit the caps,
        after dropping free buffers of ``droppable``, the least touched first; drops
        them only if so."""
        most = MAX_BUFFERS if self.max_buffers is None else self.max_buffers
        count, used = len(self._bufs) + new, sum(self._used) + extra
        drop = set()
        for i in sorted(droppable, key=lambda i: self._used[i]):
            if count <= most and used <= self._cap():
                break
            drop.add(i)
            count -= 1
            used -= self._used[i]
        if count > most or used > self._cap():
            return False
        if drop:
            keep = [i for i in range(len(self._bufs)) if i not in drop]
            self._bufs = [self._bufs[i] for i in keep]
            self._used = [self._used[i] for i in keep]
        return True

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers kept that were lent at least once (touched)."""
        return sum(self._used)

    @property
    def reserved_bytes(self) -> int:
        """Address space the buffers kept hold, touched or not."""
        return sum(b.nbytes for b in self._bufs)


def _reserve(nbytes: int, cap: int) -> np.ndarray:
    """A buffer of ``nbytes`` with room to grow into (untouched address space: no
    memory until used). Where the OS refuses the reserve, just ``nbytes``."""
    size = max(nbytes, min(cap, HEADROOM * nbytes))
    try:
        return np.empty(size, np.uint8)
    except MemoryError:
        return np.empty(nbytes, np.uint8)


def _free_refs() -> int:
    probe = ScratchPool()
    probe._bufs.append(np.empty(1, np.uint8))
    return probe._refs(0)


#: References a buffer has when nothing else holds it (interpreters count borrowed
#: references differently: measured, not assumed).
_FREE_REFS = _free_refs()
