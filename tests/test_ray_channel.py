"""The Ray engine's direct channel: the coordinator's steps travel over it with the
same answers as on actor tasks, and a killed, hung or failing worker is handled as
there. The channel's framing and handshake are tested without Ray at the end."""

from __future__ import annotations

import os
import socket
import threading

import numpy as np
import pytest

import shardlearn
from shardlearn.data import Dataset
from shardlearn.runtime import Coordinator, FaultSpec
from shardlearn.runtime.engines import direct_channel, ray_engine, shared_replies
from shardlearn.testing import inject_faults, session

N_STEPS = 12


def remember_column_sums(shard, state):
    state["sums"] = shard.X.sum(axis=0)
    state["rows"] = shard.n_rows
    return shard.n_rows


def scaled_sums(shard, state, k):
    # Changes per-shard state too: a call run twice would show in the answers.
    state["calls"] = state.get("calls", 0) + 1
    return state["sums"] * k + state["rows"] + state["calls"]


def fails_at_seven(shard, state, k):
    if k == 7:
        raise ValueError("boom at seven")
    return shard.n_rows


def _data():
    X = np.random.default_rng(3).normal(size=(4000, 3))
    return Dataset.from_arrays(X, n_shards=6)


def _run():
    with Coordinator(_data()) as c:
        rows = c.map(remember_column_sums, restore=True)
        out = [c.map(scaled_sums, float(k), restore=True) for k in range(N_STEPS)]
        return rows, out, c.report


def _reference():
    with session("local", n_workers=1):
        return _run()


def _same(a, b):
    return all(np.array_equal(x, y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


@pytest.mark.timeout(240)
def test_steps_go_over_the_channel_with_the_same_answers(ray_cluster):
    ref_rows, ref_out, _ = _reference()
    with session("ray", n_workers=2) as s:
        rows, out, _ = _run()
        assert s.engine.channel_calls >= 2 * (N_STEPS + 1)
    assert rows == ref_rows and _same(out, ref_out)


@pytest.mark.timeout(240)
def test_channel_off_sends_actor_tasks_with_the_same_answers(ray_cluster, monkeypatch):
    ref_rows, ref_out, _ = _reference()
    monkeypatch.setenv(ray_engine.CHANNEL_ENV, "0")
    with session("ray", n_workers=2) as s:
        rows, out, _ = _run()
        assert s.engine.channel_calls == 0
    assert rows == ref_rows and _same(out, ref_out)


@pytest.mark.timeout(240)
def test_sigkill_during_a_channel_call_recovers_the_same_answers(ray_cluster):
    ref_rows, ref_out, _ = _reference()
    with session("ray", n_workers=2) as s:
        pid = s.engine.pids[1]
        with inject_faults(FaultSpec(1, "kill", step="scaled_sums", call=5)):
            rows, out, report = _run()
        assert s.engine.pids[1] != pid
        before = s.engine.channel_calls
        _run()
        assert s.engine.channel_calls >= before + 2 * (N_STEPS + 1)   # the new actor's too
    assert report.failures_recovered == 1
    # The surviving worker had run the call already: it must not run it twice.
    assert rows == ref_rows and _same(out, ref_out)


@pytest.mark.timeout(240)
def test_hung_worker_in_a_channel_call_is_replaced(ray_cluster):
    # The hung call's late reply must not be taken for a later call's.
    ref_rows, ref_out, _ = _reference()
    with session("ray", n_workers=2, step_timeout=3.0) as s:
        with inject_faults(FaultSpec(0, "hang", step="scaled_sums", call=5)):
            rows, out, report = _run()
        assert s.engine.channel_calls > 0
    assert report.failures_recovered == 1
    assert rows == ref_rows and _same(out, ref_out)


@pytest.mark.timeout(240)
def test_kernel_error_in_a_channel_call_is_the_kernel_error(ray_cluster):
    with session("ray", n_workers=2) as s:
        with Coordinator(_data()) as c:
            for k in range(7):
                c.map(fails_at_seven, k)
            assert s.engine.channel_calls > 0
            with pytest.raises(shardlearn.runtime.KernelError, match="boom at seven"):
                c.map(fails_at_seven, 7)
            assert c.failures == 0
            assert sum(c.map(fails_at_seven, 9)) == 4000      # the channel still works


def big_result(shard, state, n):
    return np.arange(n, dtype=np.float64) + shard.n_rows


def wide_argument(shard, state, w):
    return float(w.sum()) + shard.n_rows


@pytest.mark.timeout(240)
def test_large_results_and_broadcast_arguments(ray_cluster):
    n = 3_000_000                         # 24 MB per shard result
    w = np.linspace(0.0, 1.0, 2_000_000)  # past the broadcast threshold: an object-store handle
    with session("ray", n_workers=2) as s:
        with Coordinator(_data()) as c:
            rows = c.map(remember_column_sums)
            before = s.engine.channel_calls
            shared = s.engine.shared_replies
            out = c.map(big_result, n)                        # 72 MB a worker
            assert s.engine.channel_calls == before + 2
            # Over the socket's limit, within shared memory's: not through the store.
            assert s.engine.stored_replies == 0 and s.engine.shared_replies == shared + 2
            assert all(o.shape == (n,) for o in out)
            assert all(np.array_equal(o, np.arange(n, dtype=np.float64) + r) for o, r in zip(out, rows))
            got = c.map(wide_argument, w)
            assert s.engine.channel_calls == before + 2       # that one went as actor tasks
            assert got == [float(w.sum()) + r for r in rows]
            mid = c.map(big_result, 500_000)                  # 4 MB a shard, 12 a worker
            shared = s.engine.shared_replies
            small = c.map(big_result, 100_000)                # 0.8 MB a shard
            assert s.engine.stored_replies == 0 and s.engine.channel_calls == before + 6
            assert s.engine.shared_replies == shared + 2      # on this machine: shared memory
            assert "shared memory" in s.engine.describe()["transport"]
            for k in range(1, 4):        # each request acknowledges the last reply
                again = c.map(big_result, 100_000)
                assert s.engine.shared_replies == shared + 2 + 2 * k
                assert all(np.array_equal(a, b) for a, b in zip(again, small))
            assert all(np.array_equal(o, np.arange(len(o), dtype=np.float64) + r)
                       for o, r in zip(mid + small, rows + rows))


@pytest.mark.timeout(240)
def test_shared_memory_off_sends_replies_on_the_socket_with_the_same_answers(ray_cluster,
                                                                              monkeypatch):
    monkeypatch.setenv(ray_engine.SHARED_MEMORY_ENV, "0")
    with session("ray", n_workers=2) as s:
        with Coordinator(_data()) as c:
            rows = c.map(remember_column_sums)
            out = c.map(big_result, 100_000)
            assert s.engine.shared_replies == 0 and s.engine.channel_calls >= 4
            assert "shared memory" not in s.engine.describe()["transport"]
            assert s.engine.stored_replies == 0
            big = c.map(big_result, 500_000)                  # 12 MB a worker
            assert s.engine.stored_replies == 2               # too large: through the store
    assert all(np.array_equal(o, np.arange(100_000, dtype=np.float64) + r)
               for o, r in zip(out, rows))
    assert all(np.array_equal(o, np.arange(500_000, dtype=np.float64) + r)
               for o, r in zip(big, rows))


@pytest.mark.timeout(240)
def test_a_closure_kernel_travels_by_value(ray_cluster):
    offset = 17.0

    def plus_offset(shard, state):
        return shard.n_rows + offset

    with session("ray", n_workers=2) as s:
        with Coordinator(_data()) as c:
            out = c.map(plus_offset)
            assert s.engine.channel_calls > 0
    assert out == [sh.n_rows + offset for sh in _data().shards]


@pytest.mark.timeout(240)
def test_a_channel_that_cannot_open_is_tried_once_per_worker(ray_cluster, monkeypatch):
    # E.g. a firewall between nodes: every try could wait for a connection timeout.
    ref_rows, ref_out, _ = _reference()
    tries = []

    class Unreachable:
        def __init__(self, address, secret, **options):
            tries.append(address)
            raise ConnectionRefusedError("no route")

    monkeypatch.setattr(direct_channel, "ChannelClient", Unreachable)
    with session("ray", n_workers=2) as s:
        rows, out, _ = _run()
        assert s.engine.channel_calls == 0 and len(tries) == 2
        assert "actor tasks" in s.engine.describe()["transport"]
    assert rows == ref_rows and _same(out, ref_out)


@pytest.mark.timeout(240)
def test_a_connection_without_the_secret_gets_nothing(ray_cluster):
    import ray

    with session("ray", n_workers=2) as s:
        with Coordinator(_data()) as c:
            c.map(remember_column_sums)
            address = ray.get(s.engine.actors[0].open_channel.remote(b"ignored: already open"))
            with pytest.raises(ConnectionError):
                direct_channel.ChannelClient(address, b"a wrong secret").read(1, timeout=10)
            assert sum(c.map(fails_at_seven, 1)) == 4000      # the engine's channel is fine


# -- the channel without Ray ----------------------------------------------------------

def _serve(run, secret=b"s" * 32):
    server = direct_channel.ChannelServer(run, secret)
    return server.start("127.0.0.1"), secret


def _echo(call_id, method, args):
    if method == "fail":
        return "error", ValueError(f"failed call {call_id}")
    if method == "unpicklable":
        return "ok", threading.Lock()
    return "ok", (method, args)


@pytest.mark.timeout(60)
def test_frames_carry_arrays_and_errors_exactly():
    address, secret = _serve(_echo)
    client = direct_channel.ChannelClient(address, secret)
    arrays = (np.arange(12, dtype=np.int32).reshape(3, 4), np.linspace(0, 1, 100_001)[::2],
              np.zeros((0, 5)), np.array(["a", "bc"]))
    client.send(direct_channel.encode(1, ("echo", arrays)))
    kind, (method, got) = client.read(1, timeout=10)
    assert kind == "ok" and method == "echo"
    for a, b in zip(arrays, got):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    assert got[0].flags.writeable                       # an owned buffer, not a view
    client.send(direct_channel.encode(2, ("fail", ())))
    kind, err = client.read(2, timeout=10)
    assert kind == "error" and isinstance(err, ValueError) and "failed call 2" in str(err)
    client.send(direct_channel.encode(3, ("unpicklable", ())))
    kind, err = client.read(3, timeout=10)
    assert kind == "error" and "could not be pickled" in str(err)
    client.send(direct_channel.encode(4, ("echo", ())))  # the stream is still in step
    assert client.read(4, timeout=10) == ("ok", ("echo", ()))
    client.close()


def _own_shm_files():
    import glob
    import os

    return set(glob.glob(f"{shared_replies.SHM_DIR}/shardlearn-{os.getpid()}-*"))


def _needs_shared_memory():
    probe = shared_replies.SharedReplies.create(1 << 20)
    if probe is None:
        pytest.skip(f"no {shared_replies.SHM_DIR} on this platform")
    probe.close()


@pytest.mark.timeout(60)
def test_arguments_shared_by_a_steps_requests_are_pickled_once_and_arrive_in_place():
    address, secret = _serve(_echo)
    clients = [direct_channel.ChannelClient(address, secret) for _ in range(2)]
    big = np.arange(20_000, dtype=np.float64)            # out of band (160 kB)
    small = np.arange(6, dtype=np.int32).reshape(2, 3)   # in band
    table = (small, big)
    calls = [("key", "step", table, [0, 2], big, 7, np.zeros(2)),
             ("key", "step", table, [1, 3], big, 7, np.zeros(2))]
    positions = direct_channel.shared_positions(calls)
    # The same objects only, not equal ones ("key" and 7 are the same objects here).
    assert positions == (0, 1, 2, 4, 5)
    shared = direct_channel.SharedArgs(positions, tuple(calls[0][k] for k in positions))
    assert len(shared.raws) == 1                          # `big` once, though passed twice
    for i, (client, args) in enumerate(zip(clients, calls)):
        parts = client.request(10 + i, "echo", args, shared)
        assert len(parts) == 2
        client.send(parts)
        kind, (method, got) = client.read(10 + i, timeout=10)
        assert kind == "ok" and method == "echo" and len(got) == len(args)
        assert got[0] == "key" and got[1] == "step" and got[3] == args[3] and got[5] == 7
        assert np.array_equal(got[2][0], small) and got[2][0].dtype == np.int32
        assert np.array_equal(got[2][1], big) and np.array_equal(got[4], big)
        assert np.array_equal(got[6], np.zeros(2))
    assert direct_channel.shared_positions(calls[:1]) == ()          # one call: nothing
    assert direct_channel.shared_positions([("a", 1), ("a",)]) == ()  # unequal lengths
    # A request whose own arguments have a large array sends everything in one pickle.
    own = ("key", "step", table, np.ones(50_000), big, 7, None)
    parts = clients[0].request(20, "echo", own, shared)
    clients[0].send(parts)
    _, (_, got) = clients[0].read(20, timeout=10)
    assert np.array_equal(got[3], own[3]) and np.array_equal(got[4], big)
    for c in clients:
        c.close()


def test_shared_memory_grows_only_into_a_share_of_the_room_left():
    share = shared_replies.MAX_SHARE_OF_ROOM
    assert shared_replies.may_grow(int(share * 1000), 1000)
    assert not shared_replies.may_grow(int(share * 1000) + 1, 1000)
    assert shared_replies.may_grow(1 << 40, None)          # room unknown: the reservation decides


@pytest.mark.timeout(60)
def test_a_reply_that_would_take_too_much_of_shared_memory_goes_another_way(monkeypatch):
    _needs_shared_memory()
    replies = shared_replies.SharedReplies.create(64 << 20)
    try:
        reply = [memoryview(np.ones(1 << 18))]                          # 2 MiB
        room = {"bytes": 8 << 20}       # growing takes 2 slots of 2 MiB: over a quarter
        monkeypatch.setattr(shared_replies, "_room", lambda directory: room["bytes"])
        assert replies.place(1, reply, 0) == -1 and replies.slot_bytes == 0
        room["bytes"] = 64 << 20
        assert replies.place(2, reply, 0) > 0 and replies.slot_bytes == 2 << 20
        assert replies.max_slot_bytes == 64 << 20      # a refusal is not a full file system
    finally:
        replies.close()


@pytest.mark.timeout(60)
def test_large_replies_come_through_shared_memory_exactly():
    _needs_shared_memory()
    before = _own_shm_files()
    address, secret = _serve(_echo)
    client = direct_channel.ChannelClient(address, secret)
    assert client.shared is not None
    assert _own_shm_files() == before        # unlinked once the driver opened it
    big = np.random.default_rng(1).normal(size=(300, 257))       # 617 kB
    small = np.arange(10.0)
    client.send(client.request(1, "echo", (big, small, big[:, ::3])))
    kind, (_, got) = client.read(1, timeout=10)
    assert kind == "ok" and client.shared.replies == 1
    for a, b in zip((big, small, big[:, ::3]), got):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        assert b.flags.writeable
    got[0][0, 0] = 99.0                      # a reply is the driver's own memory
    client.send(client.request(2, "echo", (small,)))            # under SHM_MIN_BYTES
    assert client.read(2, timeout=10)[1][1][0].tolist() == small.tolist()
    assert client.shared.replies == 1
    huge = np.arange(600_000.0)              # 4.8 MB: the slots grow, the file is remapped
    for k in range(3, 7):
        client.send(client.request(k, "echo", (huge if k % 2 else big,)))
        assert np.array_equal(client.read(k, timeout=10)[1][1][0], huge if k % 2 else big)
    assert client.shared.replies == 5
    client.close()


@pytest.mark.timeout(60)
def test_a_shared_memory_slot_is_reused_only_once_its_reply_was_read():
    _needs_shared_memory()
    address, secret = _serve(_echo)
    client = direct_channel.ChannelClient(address, secret)
    arrays = [np.full(40_000, float(k)) for k in range(6)]      # 320 kB each
    client.send(client.request(1, "echo", (arrays[0],)))        # sizes the slots
    assert client.read(1, timeout=10)[1][1][0][0] == 0.0 and client.shared.replies == 1
    for k in range(2, 5):                    # three in flight, none read: two slots
        client.send(client.request(k, "echo", (arrays[k - 1],)))
    got = [client.read(k, timeout=10)[1][1][0] for k in range(2, 5)]
    assert [g[0] for g in got] == [1.0, 2.0, 3.0] and all(len(g) == 40_000 for g in got)
    assert client.shared.replies == 3        # the third found no free slot: on the socket
    client.send(client.request(5, "echo", (arrays[4],)))        # acknowledges all three
    assert client.read(5, timeout=10)[1][1][0][0] == 4.0 and client.shared.replies == 4
    client.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shared_memory", [True, False])
def test_replies_land_in_reused_memory_but_a_held_reply_is_never_overwritten(shared_memory):
    """Arrays received are lent by RECEIVE_POOL: a dropped reply's memory takes the
    next reply of that size (no fresh pages to fault in), one still held does not."""
    if shared_memory:
        _needs_shared_memory()
    address, secret = _serve(_echo)
    client = direct_channel.ChannelClient(address, secret, shared_memory=shared_memory)
    assert (client.shared is not None) == shared_memory

    pool = shared_replies.RECEIVE_POOL

    def echo(k, value):
        client.send(client.request(k, "echo", (np.full(300_000, value),)))   # 2.4 MB
        return client.read(k, timeout=10)[1][1][0]

    def pooled(a):
        return any(np.shares_memory(a, b) for b in pool._bufs)

    held = echo(1, 1.0)
    sizes = []
    for k in range(2, 8):
        got = echo(k, float(k))
        assert pooled(got) and got.flags.writeable and (got == k).all()
        assert not np.shares_memory(held, got) and (held == 1.0).all()
        del got
        sizes.append(pool.nbytes)
    # Steady state: the dropped replies' buffers take the next ones (this process
    # is also the server here, whose received requests come from the same pool).
    assert sizes[-1] == sizes[2]
    client.close()


def test_shared_memory_of_another_machine_is_declined(tmp_path):
    before = _own_shm_files()
    shared = shared_replies.SharedReplies.create(1 << 20)
    if shared is None:
        pytest.skip(f"no {shared_replies.SHM_DIR} on this platform")
    path, token = shared.offer()
    try:
        assert shared_replies.SharedView.accept((path, b"another token 16", )) is None
        assert shared_replies.SharedView.accept((path, b"x" * 16)) is None
        assert shared_replies.SharedView.accept((str(tmp_path / "absent"), token)) is None
        assert shared_replies.SharedView.accept(None) is None
        assert _own_shm_files() == before | {path}      # a declined offer leaves it be
        view = shared_replies.SharedView.accept((path, token))
        assert view is not None and _own_shm_files() == before
        view.close()
    finally:
        shared.close()
    assert _own_shm_files() == before


def test_files_of_dead_actors_are_removed(tmp_path):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"shardlearn-{dead.pid}-0123456789abcdef"
    alive = tmp_path / f"shardlearn-{os.getpid()}-0123456789abcdef"
    other = tmp_path / "shardlearn-notapid-x"
    for f in (stale, alive, other):
        f.write_bytes(b"t")
    assert shared_replies.remove_stale_files(str(tmp_path)) == 1
    assert not stale.exists() and alive.exists() and other.exists()


@pytest.mark.timeout(60)
def test_a_driver_that_declines_shared_memory_gets_replies_on_the_socket():
    before = _own_shm_files()
    address, secret = _serve(_echo)
    client = direct_channel.ChannelClient(address, secret, shared_memory=False)
    big = np.arange(100_000.0)
    client.send(client.request(1, "echo", (big,)))
    assert np.array_equal(client.read(1, timeout=10)[1][1][0], big)
    assert client.shared is None
    assert _own_shm_files() == before        # the actor unlinked what was declined
    client.close()


def test_a_call_the_worker_cannot_unpickle_is_answered_with_an_error():
    # E.g. a module only the driver has: the frame was read in full, so the stream
    # stays in step and the call gets an error instead of a dead channel.
    address, secret = _serve(_echo)
    client = direct_channel.ChannelClient(address, secret)
    main = b"\x80\x04cno_such_module_xyz\nthing\n."     # a global from nowhere
    client.send([direct_channel._HEAD.pack(1, len(main), 0, -1, 0, 0) + main])
    kind, err = client.read(1, timeout=10)
    assert kind == "error" and "could not unpickle call 1" in str(err)
    assert "no_such_module_xyz" in str(err)
    client.send(client.request(2, "echo", ()))
    assert client.read(2, timeout=10) == ("ok", ("echo", ()))
    client.close()


def test_a_partial_send_completes_byte_for_byte():
    class Trickle:
        def __init__(self):
            self.out = bytearray()

        def sendmsg(self, parts):            # takes 5 bytes, as a full buffer might
            data = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
            self.out += data[:5]
            return 5

        def sendall(self, p):
            self.out += bytes(memoryview(p).cast("B"))

    arr = np.arange(4.0)
    parts = [b"head", memoryview(arr), b"", memoryview(arr.view(np.uint8)), b"tail"]
    sock = Trickle()
    direct_channel.send_parts(sock, parts)
    assert bytes(sock.out) == b"head" + arr.tobytes() * 2 + b"tail"


def test_frames_use_the_standard_pickler_unless_main_or_a_closure_needs_cloudpickle(monkeypatch):
    import pickle
    import sys

    from ray import cloudpickle

    calls = []
    real = cloudpickle.dumps
    monkeypatch.setattr(cloudpickle, "dumps", lambda *a, **k: calls.append(1) or real(*a, **k))
    small, big = np.arange(10.0), np.arange(10_000.0)      # 80 B in-band, 80 kB out of band
    main, raws = direct_channel._dumps(("ok", (small, big, remember_column_sums)))
    assert calls == [] and [r.nbytes for r in raws] == [big.nbytes]
    got = pickle.loads(main, buffers=raws)
    assert np.array_equal(got[1][0], small) and got[1][0].flags.writeable
    assert got[1][2] is remember_column_sums

    def in_main(x):
        return x + 1

    in_main.__module__, in_main.__qualname__ = "__main__", "_shardlearn_channel_probe"
    monkeypatch.setattr(sys.modules["__main__"], "_shardlearn_channel_probe", in_main, raising=False)
    main, raws = direct_channel._dumps(in_main)
    assert calls == [1]                     # by value: the actor's __main__ has no such name
    monkeypatch.delattr(sys.modules["__main__"], "_shardlearn_channel_probe")
    assert pickle.loads(main, buffers=raws)(1) == 2
    offset = 3.0
    main, raws = direct_channel._dumps(lambda x: x + offset)           # a closure
    assert calls == [1, 1] and pickle.loads(main, buffers=raws)(1) == 4.0
    # Reducers registered with Ray (ray.util.register_serializer puts them in
    # cloudpickle's table), even after a first frame, apply to the standard pickler.
    direct_channel._dumps(_Box())
    monkeypatch.setitem(cloudpickle.CloudPickler.dispatch, _Box, lambda b: (str, ("reduced",)))
    main, raws = direct_channel._dumps(("ok", _Box()))
    assert pickle.loads(main, buffers=raws) == ("ok", "reduced") and calls == [1, 1]
    # A module registered to travel by value goes through cloudpickle.
    import ray.cloudpickle.cloudpickle as cp

    monkeypatch.setattr(cp, "_PICKLE_BY_VALUE_MODULES", {"some_module"})
    direct_channel._dumps(("ok", small))
    assert calls == [1, 1, 1]


class _Box:
    pass


@pytest.mark.timeout(60)
def test_a_reply_over_the_size_limit_is_announced_not_sent():
    server = direct_channel.ChannelServer(_echo, b"s" * 32, max_reply_bytes=1000)
    client = direct_channel.ChannelClient(server.start("127.0.0.1"), b"s" * 32)
    client.send(direct_channel.encode(1, ("echo", (np.zeros(100),))))     # 800 bytes
    kind, (_, (arr,)) = client.read(1, timeout=10)
    assert kind == "ok" and arr.shape == (100,)
    client.send(direct_channel.encode(2, ("echo", (np.zeros(126),))))     # 1008 bytes
    kind, size = client.read(2, timeout=10)
    assert kind == direct_channel.TOO_LARGE and 1008 < size < 1300      # with its pickle
    client.close()


@pytest.mark.timeout(60)
def test_the_size_limit_is_the_sockets_a_reply_in_shared_memory_may_pass_it():
    _needs_shared_memory()
    server = direct_channel.ChannelServer(_echo, b"s" * 32, max_reply_bytes=1000,
                                          max_shared_bytes=1 << 20)
    client = direct_channel.ChannelClient(server.start("127.0.0.1"), b"s" * 32)
    assert client.shared is not None
    sent = np.arange(60_000, dtype=np.float64)                          # 480 kB
    client.send(client.request(1, "echo", (sent,)))
    kind, (_, (arr,)) = client.read(1, timeout=10)
    assert kind == "ok" and np.array_equal(arr, sent) and client.shared.replies == 1
    client.send(client.request(2, "echo", (np.zeros(200_000),)))                # 1.6 MB
    kind, size = client.read(2, timeout=10)
    assert kind == direct_channel.TOO_LARGE and size > 1_600_000
    assert client.shared.replies == 1
    client.close()


@pytest.mark.timeout(60)
def test_a_reply_to_another_call_is_refused():
    address, secret = _serve(_echo)
    client = direct_channel.ChannelClient(address, secret)
    client.send(direct_channel.encode(7, ("echo", ())))
    with pytest.raises(ConnectionError, match="call 7 where 8"):
        client.read(8, timeout=10)
    client.close()


@pytest.mark.timeout(60)
def test_a_wrong_secret_is_refused_before_any_call_runs():
    ran = []

    def run(call_id, method, args):
        ran.append(call_id)
        return "ok", None

    address, secret = _serve(run)
    with pytest.raises((ConnectionError, OSError)):     # no offer of shared memory comes
        direct_channel.ChannelClient(address, b"x" * 32)
    assert ran == []
    good = direct_channel.ChannelClient(address, secret)
    good.send(direct_channel.encode(2, ("anything", ())))
    assert good.read(2, timeout=10) == ("ok", None) and ran == [2]


@pytest.mark.timeout(60)
def test_a_silent_server_times_out_a_read():
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def challenge_then_silence():
        conn, _ = listener.accept()
        held.append(conn)                  # kept open: no reply, no EOF
        conn.sendall(b"c" * 32)
        direct_channel.send_parts(conn, direct_channel.encode(0, None))   # no shared memory

    threading.Thread(target=challenge_then_silence, daemon=True).start()
    client = direct_channel.ChannelClient(listener.getsockname()[:2], b"s" * 32)
    assert direct_channel.readable([client], 0.2) == []
    with pytest.raises(TimeoutError):
        client.read(1, timeout=0.2)


@pytest.mark.timeout(60)
def test_the_serving_thread_is_set_up_before_it_runs_calls():
    # The actor limits OpenMP per thread there (its __init__ limit stays on its own thread).
    seen = []

    def run(call_id, method, args):
        return "ok", threading.get_ident()

    server = direct_channel.ChannelServer(run, b"s" * 32,
                                          on_thread_start=lambda: seen.append(threading.get_ident()))
    client = direct_channel.ChannelClient(server.start("127.0.0.1"), b"s" * 32)
    client.send(direct_channel.encode(1, ("who", ())))
    kind, ident = client.read(1, timeout=10)
    assert seen == [ident] and ident != threading.get_ident()


class _Core:
    def __init__(self):
        self.runs = 0

    def exits(self):
        self.runs += 1
        raise SystemExit(3)

    def slow(self, gate):
        gate.wait(10)
        return "slow done"

    def quick(self):
        return "quick done"


def _actor_body():
    body = object.__new__(ray_engine._ActorBody)      # without Ray and without __init__
    body.core, body._lock, body._last, body._channel = _Core(), threading.Lock(), None, None
    return body


def test_a_call_that_ends_its_thread_is_not_run_again():
    body = _actor_body()
    with pytest.raises(SystemExit):
        body._run_once(5, "exits", ())
    kind, err = body._run_once(5, "exits", ())           # collect after the channel broke
    assert kind == "error" and "ended the worker's thread" in str(err)
    assert body.core.runs == 1


def test_an_actor_task_waits_for_a_channel_call_still_running():
    body = _actor_body()
    gate, order = threading.Event(), []
    t = threading.Thread(target=lambda: order.append(body._run_once(1, "slow", (gate,))[1]))
    t.start()
    while not body._lock.locked():
        pass
    quick = threading.Thread(target=lambda: order.append(body.call("quick")))
    quick.start()
    quick.join(0.3)
    assert order == []                                   # held behind the running call
    gate.set()
    t.join(10)
    quick.join(10)
    assert order == ["slow done", "quick done"]
