"""A direct socket from the driver to each Ray actor, for the coordinator's steps.

An actor task costs about 2 ms on a 2-core VM (Ray 2.60) before any work, and a
step of a tree fit is a few ms of work: 600 of them spent more time in Ray than
in the kernels. Over this channel the same call costs about 0.15 ms: one TCP
connection per worker, served by a thread in the actor, with blocking waits at
both ends (nothing busy-waits) and frames of pickle protocol 5 whose arrays travel as
out-of-band buffers, without a copy in user space.

Ray still starts, places, kills and replaces the actors, and carries everything
else (broadcasts, fault injection, a call's outcome after a broken channel).

Only a driver that knows the engine's secret can use an actor's channel: the
actor sends a random challenge and the driver answers with its HMAC. The secret
itself travels once, over Ray. Frames are pickles, like Ray's own traffic, and
like it are not encrypted: keep the cluster's network private.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import secrets
import selectors
import socket
import struct
import threading
from collections.abc import Callable

_HEAD = struct.Struct("<QQI")        # call id, main pickle length, number of buffers
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
#: The reply sent instead of an outcome whose arrays exceed the server's
#: ``max_reply_bytes``: the caller fetches it another way (see ChannelServer).
TOO_LARGE = "too large"


def new_secret() -> bytes:
    return secrets.token_bytes(32)


def _digest(secret: bytes, challenge: bytes) -> bytes:
    return hmac.new(secret, challenge, hashlib.sha256).digest()


def _dumps(obj) -> tuple[bytes, list]:
    from ray import cloudpickle  # as Ray does: functions of __main__ travel by value

    buffers: list = []
    main = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return main, [b.raw() for b in buffers]


def encode(call_id: int, obj) -> list:
    """The frame of ``obj`` as byte strings and buffers to send in order. Pickled
    before anything is sent, so a pickling error leaves the stream clean."""
    main, raws = _dumps(obj)
    head = _HEAD.pack(call_id, len(main), len(raws))
    sizes = struct.pack(f"<{len(raws)}Q", *(r.nbytes for r in raws))
    return [head + sizes + main, *raws]


def send_parts(sock: socket.socket, parts: list) -> None:
    for p in parts:
        sock.sendall(p)


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


def recv_frame(sock: socket.socket) -> tuple[int, object]:
    """``(call id, object)`` of the next frame; arrays come back over owned, writable buffers."""
    call_id, main_len, n_buffers = _HEAD.unpack(_recv_exact(sock, _HEAD.size))
    sizes = struct.unpack(f"<{n_buffers}Q", _recv_exact(sock, 8 * n_buffers)) if n_buffers else ()
    main = _recv_exact(sock, main_len)
    buffers = [_recv_exact(sock, n) for n in sizes]
    return call_id, pickle.loads(main, buffers=buffers)


class ChannelServer:
    """The actor's end: accepts connections and answers each request ``(method, args)``
    with ``run(call_id, method, args)``, which returns ``("ok", value)`` or
    ``("error", exception)``.

    An outcome whose arrays exceed ``max_reply_bytes`` is answered with
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
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(HANDSHAKE_TIMEOUT_S)
            challenge = secrets.token_bytes(_CHALLENGE_BYTES)
            conn.sendall(challenge)
            answer = _recv_exact(conn, _DIGEST_BYTES)
            if not hmac.compare_digest(bytes(answer), _digest(self._secret, challenge)):
                return
            conn.settimeout(None)
            if self._on_thread_start is not None:
                self._on_thread_start()
            while True:
                call_id, (method, args) = recv_frame(conn)
                outcome = self._run(call_id, method, args)
                try:
                    parts = encode(call_id, outcome)
                except Exception as exc:  # noqa: BLE001 - any pickling failure
                    parts = encode(call_id, ("error", RuntimeError(
                        f"the outcome of {method!r} could not be pickled: {exc!r}")))
                size = sum(memoryview(p).nbytes for p in parts[1:])
                if self._max_reply_bytes is not None and size > self._max_reply_bytes:
                    parts = encode(call_id, (TOO_LARGE, size))
                send_parts(conn, parts)
        except (OSError, EOFError, ConnectionError):
            pass            # the driver went away or gave up on a call: nothing to answer
        finally:
            conn.close()


class ChannelClient:
    """The driver's end of one actor's channel."""

    def __init__(self, address: tuple, secret: bytes):
        self.sock = socket.create_connection(tuple(address), timeout=CONNECT_TIMEOUT_S)
        try:
            self.sock.settimeout(HANDSHAKE_TIMEOUT_S)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in _KEEPALIVE:
                if hasattr(socket, name):
                    self.sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
            challenge = _recv_exact(self.sock, _CHALLENGE_BYTES)
            self.sock.sendall(_digest(secret, bytes(challenge)))
            self.sock.settimeout(None)
        except BaseException:
            self.sock.close()
            raise

    def send(self, parts: list) -> None:
        """Send a request made by ``encode(call_id, (method, args))``."""
        send_parts(self.sock, parts)

    def read(self, call_id: int, timeout: float | None):
        """The reply to ``call_id``: a reply that has begun arrives in full within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            got, outcome = recv_frame(self.sock)
        finally:
            self.sock.settimeout(None)
        if got != call_id:
            raise ConnectionError(f"reply to call {got} where {call_id} was expected")
        return outcome

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


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
