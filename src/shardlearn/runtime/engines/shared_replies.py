"""Large replies of a Ray actor on the driver's own machine, through shared memory.

A step in which each of 2 workers sends back 2.75 MB took 1.68 ms over loopback
TCP on a 2-core VM and 0.80 ms this way (``benchmarks/steps.py``): a memory copy
at each end instead of the kernel's socket path, which slows down when both
workers send at once. The actor writes a reply's arrays into a file in
``/dev/shm`` that the driver maps; the channel's frame (see
:mod:`.direct_channel`) only says where they lie.
"""

from __future__ import annotations

import mmap
import os
import secrets

import numpy as np

from ..scratch import ScratchPool

#: Where the actors' shared-memory files live (RAM-backed on Linux); no shared memory
#: where it does not exist.
SHM_DIR = "/dev/shm"
_PREFIX = "shardlearn-"
#: Replies with fewer bytes of arrays than this go on the socket, where they cost
#: less than the copies.
SHM_MIN_BYTES = 256 * 1024
_ALIGN = 64             # each buffer starts on a cache line
_TOKEN_BYTES = 16
_SLOTS = 2              # a reply can be written while the driver reads the one before
#: A file grows only into this share of the room left in :data:`SHM_DIR`: the
#: object store of Ray may live there too, in a sparse file whose pages are taken
#: only when written (a full file system is a SIGBUS then), and a container's
#: ``/dev/shm`` may be 64 MiB.
MAX_SHARE_OF_ROOM = 0.25
#: What arrays received over a channel land in (replies copied out on the
#: driver; on either end, buffers read from the socket). Fresh arrays of a reply's size
#: cost a page fault per 4 kB page on each reply: measured on a 2-core VM, 326
#: faults and 1.19 ms to copy out a 1.4 MB reply, most of a 4.3 ms step, where the
#: copy itself takes 0.07-0.24 ms. Most of a tree fit's replies are 0.3-3 MB.
RECEIVE_POOL = ScratchPool(max_buffers=8, max_kept_bytes=256 << 20)


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _offsets(sizes) -> list[int]:
    out, off = [], 0
    for n in sizes:
        out.append(off)
        off += _aligned(n)
    return out


def may_grow(extra_bytes: int, room_bytes: int | None) -> bool:
    """Whether a file may take ``extra_bytes`` more of a file system with
    ``room_bytes`` free (None: unknown, then yes; the reservation still fails
    cleanly on a full one)."""
    return room_bytes is None or extra_bytes <= MAX_SHARE_OF_ROOM * room_bytes


def _room(directory: str) -> int | None:
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def remove_stale_files(directory: str = SHM_DIR) -> int:
    """Unlink shared-memory files of actors that died before their driver answered
    the offer (their names carry the pid); the number removed."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        parts = name.split("-")
        if not name.startswith(_PREFIX) or len(parts) != 3 or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue                     # alive (or another user's process)
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed += 1
        except OSError:
            pass
    return removed


class _MappedFile:
    """An open file and a map of all of it, replaced by a larger one as it grows."""

    _fd: int | None = None
    _map: mmap.mmap | None = None
    _view: memoryview | None = None

    def _map_all(self, size: int, **options) -> None:
        mapped = mmap.mmap(self._fd, size, **options)
        self._release_map()
        self._map, self._view = mapped, memoryview(mapped)

    def _release_map(self) -> None:
        if self._view is not None:
            self._view.release()
            self._map.close()
            self._view = self._map = None

    def _close(self) -> None:
        self._release_map()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SharedReplies(_MappedFile):
    """The actor's end: a file in :data:`SHM_DIR` that holds only a token until the
    first large reply, then :data:`_SLOTS` slots, each as large as the largest reply
    so far (a power of two from 1 MiB up to ``max_slot_bytes``), which the actor
    writes and the driver only reads.

    The file is unlinked once the driver has opened it (the driver unlinks it; the
    actor does too, after the driver's answer), so nothing is left behind when
    either process dies later; a file left by an actor killed in the handshake is
    removed by :func:`remove_stale_files`. Its pages are reserved when it grows
    (``posix_fallocate``): a full ``/dev/shm`` means replies on the socket, not a
    SIGBUS on a later write; it grows only into :data:`MAX_SHARE_OF_ROOM` of the
    room left there (:func:`may_grow`). A slot is reused only once the driver acknowledges
    (in a request's ``ack``) the reply it held: the driver copies a reply out
    before it acknowledges it. The slots grow only while neither holds a reply.
    """

    def __init__(self, max_slot_bytes: int):
        self.max_slot_bytes = _aligned(max_slot_bytes)
        self.slot_bytes = 0
        self.path = os.path.join(SHM_DIR, f"{_PREFIX}{os.getpid()}-{secrets.token_hex(8)}")
        self._token = secrets.token_bytes(_TOKEN_BYTES)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(self._fd, self._token)
        except BaseException:
            self.close()
            raise
        self._held = [0] * _SLOTS      # id of the reply in each slot, 0 when free

    @classmethod
    def create(cls, max_slot_bytes: int) -> SharedReplies | None:
        """None where there is no shared memory to be had (no :data:`SHM_DIR`)."""
        try:
            return cls(max_slot_bytes)
        except Exception:  # noqa: BLE001 - any platform without it: the socket then
            return None

    def offer(self) -> tuple:
        """What the driver needs to open the file and check that it is this one (a
        driver on another machine, or in another container, finds no such file or
        another token)."""
        return self.path, self._token

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _grow(self, need: int) -> bool:
        slot = min(self.max_slot_bytes, max(1 << 20, 1 << (need - 1).bit_length()))
        size = _ALIGN + _SLOTS * slot
        if not may_grow(_SLOTS * (slot - self.slot_bytes), _room(SHM_DIR)):
            return False            # this reply goes another way; a smaller one may grow
        try:
            os.posix_fallocate(self._fd, 0, size)
            self._map_all(size)
        except (OSError, ValueError, AttributeError):
            self.max_slot_bytes = self.slot_bytes      # full: do not try again
            return False
        self.slot_bytes = slot
        return True

    def place(self, call_id: int, raws: list, acked: int) -> int:
        """Copy a reply's buffers into a free slot; the offset of the first, or -1:
        the reply goes on the socket (too small, too large, no slot free)."""
        need = sum(_aligned(r.nbytes) for r in raws)
        if need < SHM_MIN_BYTES or need > self.max_slot_bytes:
            return -1
        free = [k for k, held in enumerate(self._held) if held <= acked]
        if need > self.slot_bytes and (len(free) < _SLOTS or not self._grow(need)):
            return -1
        if not free:
            return -1
        base = _ALIGN + free[0] * self.slot_bytes
        for off, r in zip(_offsets(r.nbytes for r in raws), raws):
            self._view[base + off:base + off + r.nbytes] = r.cast("B")
        self._held[free[0]] = call_id
        return base

    def close(self) -> None:
        self.unlink()
        self._close()


class SharedView(_MappedFile):
    """The driver's read-only map of an actor's :class:`SharedReplies`, remapped as
    the file grows."""

    def __init__(self, path: str, token: bytes):
        self._fd = os.open(path, os.O_RDONLY)
        self.replies = 0        # replies copied out of it
        if os.pread(self._fd, _TOKEN_BYTES, 0) != token:
            self.close()
            raise ValueError("not the actor's shared memory (another machine?)")
        try:
            os.unlink(path)     # mapped from here on: nothing to leave behind
        except OSError:
            pass

    @classmethod
    def accept(cls, offer) -> SharedView | None:
        """A view of the offered file, or None when it is not this machine's to map."""
        if offer is None:
            return None
        try:
            return cls(*offer)
        except (OSError, ValueError, TypeError):
            return None

    def copy_out(self, at: int, sizes) -> list:
        """The buffers from offset ``at``, each copied into memory of its own (one pass,
        no zeroing; lent by :data:`RECEIVE_POOL`, so no new pages to fault in)."""
        offsets = _offsets(sizes)
        end = at + (offsets[-1] + sizes[-1] if sizes else 0)
        if at < _ALIGN:
            raise ConnectionError(f"a reply at {at}, inside the shared file's token")
        if self._map is None or end > len(self._map):
            size = os.fstat(self._fd).st_size
            if end > size:
                raise ConnectionError(f"a reply at {at}..{end} of a {size}-byte shared file")
            self._map_all(size, prot=mmap.PROT_READ)
        out = []
        for off, n in zip(offsets, sizes):
            buf = RECEIVE_POOL.empty(n, np.uint8)
            buf[:] = np.frombuffer(self._view, np.uint8, n, at + off)
            out.append(buf)
        self.replies += 1
        return out

    def close(self) -> None:
        self._close()
