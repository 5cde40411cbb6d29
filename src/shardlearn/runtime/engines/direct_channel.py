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
actor copies them into a shared-memory file that the driver maps, and the frame
only says where they lie (:mod:`.shared_replies`).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
import secrets
import selectors
import socket
import struct
import threading
from collections.abc import Callable

import numpy as np

from .shared_replies import RECEIVE_POOL, SharedReplies, SharedView, remove_stale_files

#: call id, main pickle length, number of buffers, offset of the buffers in the
#: actor's shared-memory file (-1: they follow on the socket), (requests) the last
#: reply the driver has read, and the length of the call's own pickle when the
#: main pickle is two (0: one; see :class:`SharedArgs`).
_HEAD = struct.Struct("<QQIqQQ")
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
#: Largest shared-memory slot (a reply's arrays): larger replies go on the socket,
#: or are announced as too large. Through shared memory, 2 workers replying 9, 24
#: and 72 MB each took 3.4, 10 and 51 ms a step on a 2-core VM, against 10, 22
#: and 92 ms with replies over 8 MB collected through Ray's object store, and 9.3,
#: 13 and 62 ms as actor tasks (``benchmarks/steps.py``). The slots grow only as
#: large as the replies (a power of two): memory in ``/dev/shm`` is taken only by
#: actors that send large replies, and a ``/dev/shm`` with little room left sends
#: them the other way (:func:`.shared_replies.may_grow`).
DEFAULT_SHARED_BYTES = 128 * 2**20
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
    a call at each end of a tree level's step. It still uses cloudpickle's table of
    reducers (Ray's own and any ``ray.util.register_serializer``). cloudpickle
    itself where the standard pickler fails (closures, lambdas), where a module is
    registered to travel by value, and where the pickle names ``__main__``, which
    the actor's ``__main__`` is not: functions of ``__main__`` travel by value, as
    over Ray."""
    from ray import cloudpickle

    buffers: list = []

    def out_of_band(buf):
        if buf.raw().nbytes < IN_BAND_BYTES:
            return True                      # true: pickled in-band
        buffers.append(buf)
        return False

    if not _modules_by_value():
        try:
            out = io.BytesIO()
            pickler = pickle.Pickler(out, protocol=5, buffer_callback=out_of_band)
            pickler.dispatch_table = _reducers(cloudpickle.CloudPickler.dispatch)
            pickler.dump(obj)
            main = out.getvalue()
            if b"__main__" not in main:
                return main, [b.raw() for b in buffers]
        except Exception:  # noqa: BLE001 - e.g. a closure: cloudpickle can
            pass
    buffers.clear()
    main = cloudpickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
    return main, [b.raw() for b in buffers]


_reducer_cache: list = [None, None]


def _reducers(chain) -> dict:
    """cloudpickle's reducers (a ChainMap) as one dict, rebuilt only when a map of it
    grows: copying it took as long as pickling a tree level's request."""
    key = tuple(len(m) for m in chain.maps)
    if _reducer_cache[0] != key:
        _reducer_cache[:] = [key, dict(chain)]
    return _reducer_cache[1]


def _modules_by_value() -> bool:
    """Whether some module is registered with ``cloudpickle.register_pickle_by_value``."""
    try:
        from ray.cloudpickle import cloudpickle as cp
    except ImportError:
        return False
    return bool(getattr(cp, "_PICKLE_BY_VALUE_MODULES", ()))


def _frame(call_id: int, main: bytes, raws: list, *, shared_at: int = -1, ack: int = 0,
           split: int = 0) -> list:
    head = _HEAD.pack(call_id, len(main), len(raws), shared_at, ack, split)
    sizes = struct.pack(f"<{len(raws)}Q", *(r.nbytes for r in raws))
    return [head + sizes + main, *(raws if shared_at < 0 else ())]


class SharedArgs:
    """Arguments that every request of one step passes, pickled once for all workers.

    ``positions``: where they go in each request's ``args``. A request then pickles
    only its own arguments (and None at those positions), and its frame carries
    this pickle after its own: the actor unpickles both and puts these values back
    in place. Pickling a tree level's arguments took 0.1-0.2 ms a worker.
    """

    def __init__(self, positions: tuple, values: tuple):
        self.positions = positions
        self.main, self.raws = _dumps(values)


def shared_positions(arg_lists: list) -> tuple:
    """Positions at which every one of several argument lists holds the same object."""
    if len(arg_lists) < 2:
        return ()
    first = arg_lists[0]
    return tuple(k for k, a in enumerate(first)
                 if all(len(o) == len(first) and o[k] is a for o in arg_lists[1:]))


def encode(call_id: int, obj, ack: int = 0) -> list:
    """The frame of ``obj`` as byte strings and buffers to send in order. Pickled
    before anything is sent, so a pickling error leaves the stream clean. ``ack``
    (requests): the id of the last reply the driver has read in full, which frees
    its shared-memory slot (see :class:`SharedReplies`)."""
    main, raws = _dumps(obj)
    return _frame(call_id, main, raws, ack=ack)


def encode_request(call_id: int, method: str, args: tuple, ack: int = 0,
                   shared: SharedArgs | None = None) -> list:
    """:func:`encode` of the request ``(method, args)``; with ``shared``, made from the
    values ``args`` holds at its positions (:func:`shared_positions`), only the other
    arguments are pickled here (not checked: the caller keeps the two in step)."""
    if shared is None or not shared.positions:
        return encode(call_id, (method, args), ack)
    own = list(args)
    for k in shared.positions:
        own[k] = None
    head, head_raws = _dumps((method, tuple(own), shared.positions))
    if head_raws:     # the frame's buffers are the shared part's: send it all as one
        return encode(call_id, (method, args), ack)
    return _frame(call_id, head + shared.main, shared.raws, ack=ack, split=len(head))


def _loads(main, buffers, split: int):
    if not split:
        return pickle.loads(main, buffers=buffers)
    view = memoryview(main)
    method, args, positions = pickle.loads(view[:split])
    values = pickle.loads(view[split:], buffers=buffers)
    args = list(args)
    for k, v in zip(positions, values):
        args[k] = v
    return method, tuple(args)


def send_parts(sock: socket.socket, parts: list) -> None:
    """Send byte strings and buffers in order, in one system call where they fit."""
    if len(parts) == 1 or len(parts) > _IOV_MAX:
        for p in parts:
            sock.sendall(p)
        return
    sent = sock.sendmsg(parts)
    for p in parts:                          # the rest of a partial send, in bytes
        v = memoryview(p).cast("B")
        if sent >= v.nbytes:
            sent -= v.nbytes
            continue
        sock.sendall(v[sent:])
        sent = 0


def _recv_exact(sock: socket.socket, n: int, pooled: bool = False):
    """``n`` bytes: a bytearray, or with ``pooled`` a uint8 array of :data:`RECEIVE_POOL`."""
    buf = RECEIVE_POOL.empty(n, np.uint8) if pooled else bytearray(n)
    view = memoryview(buf).cast("B")
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("the other end closed the channel")
        got += k
    return buf


class FrameError(Exception):
    """A frame read in full whose pickle could not be loaded (the stream is still in step)."""

    def __init__(self, call_id: int, ack: int, cause: Exception):
        super().__init__(f"call {call_id}: {cause!r}")
        self.call_id, self.ack, self.cause = call_id, ack, cause


def recv_frame(sock: socket.socket, shared: SharedView | None = None) -> tuple[int, object, int]:
    """``(call id, object, ack)`` of the next frame; arrays come back over owned,
    writable buffers (copied out of ``shared`` when the frame says they lie there)."""
    call_id, main_len, n_buffers, shared_at, ack, split = _HEAD.unpack(
        _recv_exact(sock, _HEAD.size))
    sizes = struct.unpack(f"<{n_buffers}Q", _recv_exact(sock, 8 * n_buffers)) if n_buffers else ()
    main = _recv_exact(sock, main_len)
    if shared_at < 0:
        buffers = [_recv_exact(sock, n, pooled=True) for n in sizes]
    elif shared is None:
        raise ConnectionError("a reply in shared memory on a channel without it")
    else:
        buffers = shared.copy_out(shared_at, sizes)
    try:
        obj = _loads(main, buffers, split)
    except Exception as exc:  # noqa: BLE001 - e.g. a module the actor cannot import
        raise FrameError(call_id, ack, exc) from exc
    return call_id, obj, ack


class ChannelServer:
    """The actor's end: accepts connections and answers each request ``(method, args)``
    with ``run(call_id, method, args)``, which returns ``("ok", value)`` or
    ``("error", exception)``.

    An outcome of more than ``max_reply_bytes`` (pickle and arrays) that does not go
    through shared memory (arrays of up to ``max_shared_bytes``, a driver on the same
    machine) is answered with ``(TOO_LARGE, bytes)`` instead: ``run`` must keep it
    for the caller to fetch over Ray, whose object store moves tens of MB faster
    than a socket (measured: 48 MB results, 2 workers on one node).
    """

    def __init__(self, run: Callable[[int, str, tuple], tuple], secret: bytes,
                 max_reply_bytes: int | None = None, on_thread_start: Callable | None = None,
                 max_shared_bytes: int = DEFAULT_SHARED_BYTES):
        self._run = run
        self._secret = secret
        self._max_reply_bytes = max_reply_bytes
        self._max_shared_bytes = max_shared_bytes
        self._on_thread_start = on_thread_start
        self._listener: socket.socket | None = None
        self.address: tuple | None = None

    def start(self, host: str) -> tuple:
        if self._listener is None:
            remove_stale_files()
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
                try:
                    call_id, (method, args), acked = recv_frame(conn)
                    outcome = self._run(call_id, method, args)
                except FrameError as bad:
                    call_id, acked, method = bad.call_id, bad.ack, "?"
                    outcome = ("error", RuntimeError(
                        f"the worker could not unpickle call {call_id}: {bad.cause!r}"))
                try:
                    main, raws = _dumps(outcome)
                except Exception as exc:  # noqa: BLE001 - any pickling failure
                    main, raws = _dumps(("error", RuntimeError(
                        f"the outcome of {method!r} could not be pickled: {exc!r}")))
                size = len(main) + sum(r.nbytes for r in raws)
                limit = self._max_reply_bytes
                at = -1
                if shared is not None and (limit is None or len(main) <= limit):
                    at = shared.place(call_id, raws, acked)
                # The limit is the socket's: a reply whose arrays are in shared memory
                # sends only its pickle.
                if at < 0 and limit is not None and size > limit:
                    main, raws = _dumps((TOO_LARGE, size))
                send_parts(conn, _frame(call_id, main, raws, shared_at=at))
        except (OSError, EOFError, ConnectionError):
            pass            # the driver went away or gave up on a call: nothing to answer
        finally:
            conn.close()
            if shared is not None:
                shared.close()

    def _offer_shared_memory(self, conn: socket.socket) -> SharedReplies | None:
        """Offer the driver a shared-memory file for large replies; the file is
        unlinked once the driver has answered, whatever the answer."""
        shared = SharedReplies.create(self._max_shared_bytes)
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

    def request(self, call_id: int, method: str, args: tuple,
                shared: SharedArgs | None = None) -> list:
        """The frame of a call, acknowledging the replies read so far (``shared``: see
        :func:`encode_request`)."""
        return encode_request(call_id, method, args, self.consumed, shared)

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
