"""A direct socket from the driver to each Ray actor, for the coordinator's steps.

An actor task costs about 2 ms on a 2-core VM (Ray 2.60) before any work, and a
step of a tree fit is a few ms of work: 600 of them spent more time in Ray than
in the kernels. Over this channel the same call costs about 0.15 ms: one TCP
connection per worker, served by a thread in the actor, with blocking waits at
both ends (nothing busy-waits) and frames of pickle protocol 5 whose arrays of
:data:`IN_BAND_BYTES` and more travel as out-of-band buffers, without a copy in
user space (smaller ones inside the pickle: a buffer of its own costs a system
call at each end).

Ray still starts, places, kills and replaces the actors, and carries everything
else (broadcasts, fault injection, a call's outcome after a broken channel).

Only a driver that knows the engine's secret can use an actor's channel: the
actor sends a random challenge and the driver answers with its HMAC. The secret
itself travels once, over Ray. Frames are pickles, like Ray's own traffic, and
like it are not encrypted: keep the cluster's network private.

On the driver's own machine the arrays of a large reply skip the socket: the
actor copies them into a shared-memory file that the driver maps (see
:class:`SharedReplies`), and the frame only says where they lie. Two workers
sending 2.75 MB each at once took 4-5 ms over loopback TCP on a 2-core VM; a
memory copy at each end takes a fraction of that, and does not slow down when
both workers send together.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import pickle
import secrets
import selectors
import socket
import struct
import threading
from collections.abc import Callable

import numpy as np

#: call id, main pickle length, number of buffers, shared-memory slot of the buffers
#: (-1: they follow on the socket), and (requests) the last reply the driver has read.
_HEAD = struct.Struct("<QQIiQ")
_CHALLENGE_BYTES = 32
_DIGEST_BYTES = hashlib.sha256().digest_size
#: How long a driver waits to connect to an actor, and then to answer its challenge.
CONNECT_TIMEOUT_S = 10.0
HANDSHAKE_TIMEOUT_S = 30.0
#: Longest silence inside a reply that has begun (a reply that stalls is broken).
FRAME_TIMEOUT_S = 30.0
#: TCP keepalive (where the platform has the options): a peer machine that is
#: gone without closing its sockets shows as a broken channel in about 25 s.
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
#: Slot size of a server without a reply limit.
DEFAULT_SHARED_BYTES = 8 * 2**20
#: The reply sent instead of an outcome whose arrays exceed the server's
#: ``max_reply_bytes``: the caller fetches it another way (see ChannelServer).
TOO_LARGE = "too large"


def new_secret() -> bytes:
    return secrets.token_bytes(32)


def _digest(secret: bytes, challenge: bytes) -> bytes:
    return hmac.new(secret, challenge, hashlib.sha256).digest()


#: Arrays smaller than this travel inside the pickle: a separate buffer costs a
#: system call at each end, more than copying a few kB.
IN_BAND_BYTES = 32 * 1024
_IOV_MAX = 512          # parts per sendmsg (the platform allows at least 1024)


def _dumps(obj) -> tuple[bytes, list]:
    """``(pickle, out-of-band buffers)``. The standard pickler where it can: Ray's
    cloudpickle, whose every object passes through a Python hook, took 0.1-0.2 ms
    a call at each end of a tree level's step. cloudpickle where the standard one
    fails (closures, lambdas) or names ``__main__``, which the actor's ``__main__``
    is not: functions of ``__main__`` travel by value, as over Ray."""
    buffers: list = []

    def out_of_band(buf):
        if buf.raw().nbytes < IN_BAND_BYTES:
            return True                      # true: pickled in-band
        buffers.append(buf)
        return False

    try:
        main = pickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
        if b"__main__" not in main:
            return main, [b.raw() for b in buffers]
    except Exception:  # noqa: BLE001 - e.g. a closure: cloudpickle can
        pass
    from ray import cloudpickle

    buffers.clear()
    main = cloudpickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
    return main, [b.raw() for b in buffers]


def _frame(call_id: int, main: bytes, raws: list, *, slot: int = -1, ack: int = 0) -> list:
    head = _HEAD.pack(call_id, len(main), len(raws), slot, ack)
    sizes = struct.pack(f"<{len(raws)}Q", *(r.nbytes for r in raws))
    return [head + sizes + main, *(raws if slot < 0 else ())]


def encode(call_id: int, obj, ack: int = 0) -> list:
    """The frame of ``obj`` as byte strings and buffers to send in order. Pickled
    before anything is sent, so a pickling error leaves the stream clean. ``ack``
    (requests): the id of the last reply the driver has read in full, which frees
    its shared-memory slot (see :class:`SharedReplies`)."""
    main, raws = _dumps(obj)
    return _frame(call_id, main, raws, ack=ack)


def send_parts(sock: socket.socket, parts: list) -> None:
    """Send byte strings and buffers in order, in one system call where they fit."""
    if len(parts) == 1 or len(parts) > _IOV_MAX:
        for p in parts:
            sock.sendall(p)
        return
    sent = sock.sendmsg(parts)
    for p in parts:                          # the rest of a partial send
        v = memoryview(p)
        if sent >= v.nbytes:
            sent -= v.nbytes
            continue
        sock.sendall(v[sent:])
        sent = 0


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("the other end closed the channel")
        got += k
    return buf


def recv_frame(sock: socket.socket, shared: SharedView | None = None) -> tuple[int, object, int]:
    """``(call id, object, ack)`` of the next frame; arrays come back over owned,
    writable buffers (copied out of ``shared`` when the frame names a slot of it)."""
    call_id, main_len, n_buffers, slot, ack = _HEAD.unpack(_recv_exact(sock, _HEAD.size))
    sizes = struct.unpack(f"<{n_buffers}Q", _recv_exact(sock, 8 * n_buffers)) if n_buffers else ()
    main = _recv_exact(sock, main_len)
    if slot < 0:
        buffers = [_recv_exact(sock, n) for n in sizes]
    elif shared is None:
        raise ConnectionError("a reply in shared memory on a channel without it")
    else:
        buffers = shared.copy_out(slot, sizes)
    return call_id, pickle.loads(main, buffers=buffers), ack


# -- large replies through shared memory, on the driver's machine ------------------------
#: Where the actors' shared-memory files live (RAM-backed on Linux); no shared memory
#: where it does not exist.
SHM_DIR = "/dev/shm"
#: Replies with fewer bytes of arrays than this go on the socket, where they cost
#: less than the copies.
SHM_MIN_BYTES = 256 * 1024
_ALIGN = 64             # each buffer starts on a cache line
_TOKEN_BYTES = 16
_SLOTS = 2              # a reply can be written while the driver reads the one before


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _offsets(sizes) -> list[int]:
    out, off = [], 0
    for n in sizes:
        out.append(off)
        off += _aligned(n)
    return out


class SharedReplies:
    """The actor's end: a file in :data:`SHM_DIR` of :data:`_SLOTS` slots, each big
    enough for one reply's arrays, which the actor writes and the driver only reads.

    The file is unlinked as soon as the driver has answered the offer (see
    :meth:`offer`), so nothing is left behind when either process dies; its pages
    are reserved up front (``posix_fallocate``), so a full ``/dev/shm`` is an error
    here rather than a SIGBUS on a later write. A slot is reused only once the
    driver acknowledges (in a request's ``ack``) the reply it held: the driver
    copies a reply out before it acknowledges it.
    """

    def __init__(self, slot_bytes: int):
        self.slot_bytes = _aligned(slot_bytes)
        size = _ALIGN + _SLOTS * self.slot_bytes
        self.path = os.path.join(SHM_DIR, f"shardlearn-{os.getpid()}-{secrets.token_hex(8)}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.unlink(self.path)
            raise
        finally:
            os.close(fd)
        self._view = memoryview(self._map)
        self._token = secrets.token_bytes(_TOKEN_BYTES)
        self._view[:_TOKEN_BYTES] = self._token
        self._held = [0] * _SLOTS      # id of the reply in each slot, 0 when free

    @classmethod
    def create(cls, slot_bytes: int) -> SharedReplies | None:
        """None where there is no shared memory to be had (no :data:`SHM_DIR`, full)."""
        try:
            return cls(slot_bytes)
        except OSError:
            return None

    def offer(self) -> tuple:
        """What the driver needs to map the file and check that it is this one (a
        driver on another machine, or in another container, finds no such file or
        another token)."""
        return self.path, self._token, len(self._map)

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def place(self, call_id: int, raws: list, acked: int) -> int:
        """Copy a reply's buffers into a free slot; its index, or -1: the reply goes on
        the socket (too small, too large, or no slot free)."""
        need = sum(_aligned(r.nbytes) for r in raws)
        if need < SHM_MIN_BYTES or need > self.slot_bytes:
            return -1
        free = [k for k, held in enumerate(self._held) if held <= acked]
        if not free:
            return -1
        slot = free[0]
        base = _ALIGN + slot * self.slot_bytes
        for off, r in zip(_offsets(r.nbytes for r in raws), raws):
            self._view[base + off:base + off + r.nbytes] = r.cast("B")
        self._held[slot] = call_id
        return slot

    def close(self) -> None:
        self.unlink()
        self._view.release()
        self._map.close()


class SharedView:
    """The driver's read-only map of an actor's :class:`SharedReplies`."""

    def __init__(self, path: str, token: bytes, size: int):
        fd = os.open(path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self._view = memoryview(self._map)
        self.slot_bytes = (size - _ALIGN) // _SLOTS
        self.replies = 0        # replies copied out of it
        if bytes(self._view[:_TOKEN_BYTES]) != token:
            self.close()
            raise ValueError("not the actor's shared memory (another machine?)")

    @classmethod
    def accept(cls, offer) -> SharedView | None:
        """A map of the offered file, or None when it is not this machine's to map."""
        if offer is None:
            return None
        try:
            return cls(*offer)
        except (OSError, ValueError, TypeError):
            return None

    def copy_out(self, slot: int, sizes) -> list:
        """The slot's buffers, each copied into memory of its own (one pass, no zeroing)."""
        if not 0 <= slot < _SLOTS:
            raise ConnectionError(f"a reply in shared-memory slot {slot}")
        base = _ALIGN + slot * self.slot_bytes
        out = []
        for off, n in zip(_offsets(sizes), sizes):
            if off + n > self.slot_bytes:
                raise ConnectionError("a reply past the end of its shared-memory slot")
            buf = np.empty(n, np.uint8)
            buf[:] = np.frombuffer(self._view, np.uint8, n, base + off)
            out.append(buf)
        self.replies += 1
        return out

    def close(self) -> None:
        self._view.release()
        self._map.close()


class ChannelServer:
    """The actor's end: accepts connections and answers each request ``(method, args)``
    with ``run(call_id, method, args)``, which returns ``("ok", value)`` or
    ``("error", exception)``.

    An outcome of more than ``max_reply_bytes`` (pickle and arrays) is answered with
    ``(TOO_LARGE, bytes)`` instead: ``run`` must keep it for the caller to fetch
    over Ray, whose object store moves tens of MB faster than a socket (measured:
    48 MB results, 2 workers on one node).
    """

    def __init__(self, run: Callable[[int, str, tuple], tuple], secret: bytes,
                 max_reply_bytes: int | None = None, on_thread_start: Callable | None = None):
        self._run = run
        self._secret = secret
        self._max_reply_bytes = max_reply_bytes
        self._on_thread_start = on_thread_start
        self._listener: socket.socket | None = None
        self.address: tuple | None = None

    def start(self, host: str) -> tuple:
        if self._listener is None:
            self._listener = socket.create_server((host, 0))
            self.address = self._listener.getsockname()[:2]
            threading.Thread(target=self._accept_loop, name="shardlearn-channel",
                             daemon=True).start()
        return self.address

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            # A connection of its own thread: a driver that reconnects after a call
            # timed out is heard even while that call still runs.
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        shared = None
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(HANDSHAKE_TIMEOUT_S)
            challenge = secrets.token_bytes(_CHALLENGE_BYTES)
            conn.sendall(challenge)
            answer = _recv_exact(conn, _DIGEST_BYTES)
            if not hmac.compare_digest(bytes(answer), _digest(self._secret, challenge)):
                return
            shared = self._offer_shared_memory(conn)
            conn.settimeout(None)
            if self._on_thread_start is not None:
                self._on_thread_start()
            acked = 0
            while True:
                call_id, (method, args), acked = recv_frame(conn)
                outcome = self._run(call_id, method, args)
                try:
                    main, raws = _dumps(outcome)
                except Exception as exc:  # noqa: BLE001 - any pickling failure
                    main, raws = _dumps(("error", RuntimeError(
                        f"the outcome of {method!r} could not be pickled: {exc!r}")))
                size = len(main) + sum(r.nbytes for r in raws)
                if self._max_reply_bytes is not None and size > self._max_reply_bytes:
                    main, raws = _dumps((TOO_LARGE, size))
                slot = -1 if shared is None else shared.place(call_id, raws, acked)
                send_parts(conn, _frame(call_id, main, raws, slot=slot))
        except (OSError, EOFError, ConnectionError):
            pass            # the driver went away or gave up on a call: nothing to answer
        finally:
            conn.close()
            if shared is not None:
                shared.close()

    def _offer_shared_memory(self, conn: socket.socket) -> SharedReplies | None:
        """Offer the driver a shared-memory file for large replies; the file is
        unlinked once the driver has answered, whatever the answer."""
        shared = SharedReplies.create(self._max_reply_bytes or DEFAULT_SHARED_BYTES)
        try:
            send_parts(conn, encode(0, None if shared is None else shared.offer()))
            accepted = bytes(_recv_exact(conn, 1)) == b"\x01"
        except BaseException:
            if shared is not None:
                shared.close()
            raise
        if shared is not None:
            shared.unlink()
            if not accepted:
                shared.close()
                shared = None
        return shared


class ChannelClient:
    """The driver's end of one actor's channel."""

    def __init__(self, address: tuple, secret: bytes, shared_memory: bool = True):
        self.sock = socket.create_connection(tuple(address), timeout=CONNECT_TIMEOUT_S)
        self.shared: SharedView | None = None
        #: The last call whose reply was read in full (sent with each request).
        self.consumed = 0
        try:
            self.sock.settimeout(HANDSHAKE_TIMEOUT_S)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in _KEEPALIVE:
                if hasattr(socket, name):
                    self.sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
            challenge = _recv_exact(self.sock, _CHALLENGE_BYTES)
            self.sock.sendall(_digest(secret, bytes(challenge)))
            _, offer, _ = recv_frame(self.sock)
            if shared_memory:
                self.shared = SharedView.accept(offer)
            self.sock.sendall(b"\x01" if self.shared is not None else b"\x00")
            self.sock.settimeout(None)
        except BaseException:
            self.close()
            raise

    def request(self, call_id: int, method: str, args: tuple) -> list:
        """The frame of a call, acknowledging the replies read so far."""
        return encode(call_id, (method, args), ack=self.consumed)

    def send(self, parts: list) -> None:
        """Send a request made by :meth:`request` (or ``encode(call_id, (method, args))``)."""
        send_parts(self.sock, parts)

    def read(self, call_id: int, timeout: float | None):
        """The reply to ``call_id``: a reply that has begun arrives in full within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            got, outcome, _ = recv_frame(self.sock, self.shared)
        finally:
            self.sock.settimeout(None)
        if got != call_id:
            raise ConnectionError(f"reply to call {got} where {call_id} was expected")
        self.consumed = call_id
        return outcome

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        if self.shared is not None:
            self.shared.close()
            self.shared = None


# poll where the platform has it: no descriptor limit, and no epoll instance to
# create and close on every wait.
_Selector = getattr(selectors, "PollSelector", selectors.DefaultSelector)


def readable(clients: list, timeout: float | None) -> list:
    """The clients with a reply waiting (empty after ``timeout`` seconds). A selector,
    not ``select.select``: a driver with hundreds of actors has descriptors >= 1024."""
    with _Selector() as sel:
        for c in clients:
            sel.register(c.sock, selectors.EVENT_READ, c)
        return [key.data for key, _ in sel.select(timeout)]
