"""Reused buffers (per-level histograms, replies copied out): lent again only when nothing holds them."""

import threading

import numpy as np

from shardlearn.algorithms.tree._scratch import POOL
from shardlearn.runtime import scratch as S


def _addr(a):
    return a.__array_interface__["data"][0]


def test_a_buffer_is_lent_again_only_once_its_arrays_are_gone():
    pool = S.ScratchPool()
    shape = (4, 64, 256, 3)                       # 1.5 MB of float64: pooled
    a = pool.zeros(shape, np.float64)
    a[...] = 7.0
    b = pool.zeros(shape, np.float64)             # `a` is alive: another buffer
    assert not np.shares_memory(a, b) and (b == 0).all()
    view, at_a = a[1:3], _addr(a)                 # a view alone keeps the buffer busy
    del a
    c = pool.empty(shape, np.float64)
    assert not np.shares_memory(c, view) and not np.shares_memory(c, b)
    del view, c
    d = pool.zeros(shape, np.float64)             # free again: reused, and zeroed
    assert _addr(d) == at_a
    assert (d == 0).all() and d.flags.c_contiguous and d.shape == shape
    assert pool.nbytes == 3 * d.nbytes


def test_reuse_takes_the_smallest_free_buffer_that_fits_and_any_dtype():
    pool = S.ScratchPool()
    big = pool.empty((4 << 20,), np.uint8)
    small = pool.empty((2 << 20,), np.uint8)
    at_big, at_small = _addr(big), _addr(small)
    del big, small
    x = pool.empty((1 << 18,), np.float64)        # 2 MB: the small buffer
    y = pool.empty((3 << 20) // 4, np.float32)    # 3 MB: only the big one fits
    assert (_addr(x), _addr(y)) == (at_small, at_big)
    assert x.dtype == np.float64 and y.dtype == np.float32


def test_small_arrays_are_not_pooled_and_the_pool_keeps_a_bounded_amount(monkeypatch):
    pool = S.ScratchPool()
    tiny = pool.zeros((10, 10), np.float64)
    assert tiny.base is None and pool.nbytes == 0
    held = [pool.empty((1 << 20,), np.uint8) for _ in range(S.MAX_BUFFERS + 2)]
    assert pool.nbytes == S.MAX_BUFFERS << 20     # the extra ones were lent, not kept
    assert len({_addr(h) for h in held}) == len(held)   # all distinct while held
    del held
    monkeypatch.setattr(S, "MAX_KEPT_BYTES", 3 << 20)
    two = pool.empty((2 << 20,), np.uint8)        # free 1 MB buffers dropped to keep it
    assert pool.nbytes <= 3 << 20
    assert any(np.shares_memory(two, buf) for buf in pool._bufs)
    kept = pool.nbytes
    huge = pool.empty((4 << 20,), np.uint8)       # over the byte cap: lent, not kept
    assert pool.nbytes == kept
    assert not any(np.shares_memory(huge, buf) for buf in pool._bufs)


def test_threads_lending_at_once_never_share_a_live_buffer():
    pool = S.ScratchPool()
    errors = []
    live = {}
    lock = threading.Lock()

    def work(k):
        for _ in range(200):
            a = pool.zeros((1 << 18,), np.float64)            # 2 MB
            start = a.__array_interface__["data"][0]
            with lock:
                if start in live:
                    errors.append(start)
                live[start] = k
            a[:] = k
            if not (a == k).all():
                errors.append(("overwritten", k))
            with lock:
                del live[start]
            del a

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 0 < pool.nbytes <= S.MAX_BUFFERS * (2 << 20)


def test_a_pool_pickles_empty_and_a_free_buffer_is_dropped_only_for_one_kept(monkeypatch):
    import pickle

    pool = S.ScratchPool()
    kept = [pool.empty((n << 20,), np.uint8) for n in (1, 3, 3)]
    assert pickle.loads(pickle.dumps(pool)).nbytes == 0 and pool.nbytes == 7 << 20
    del kept[0]                                    # the 1 MB buffer is free
    sizes = sorted(b.nbytes for b in pool._bufs)
    monkeypatch.setattr(S, "MAX_KEPT_BYTES", 7 << 20)
    big = pool.empty((5 << 20,), np.uint8)         # no room even without the 1 MB one
    assert sorted(b.nbytes for b in pool._bufs) == sizes       # so nothing was dropped
    assert not any(np.shares_memory(big, b) for b in pool._bufs)


def test_a_replayed_fold_step_returns_nothing():
    # Replays rebuild state only; a level's accumulator must not travel back.
    from shardlearn.runtime.coordinator import _FoldReplay

    assert _FoldReplay(lambda shard, state, acc, x: ("histograms", x))(None, {}, 1) is None


def test_fits_on_reused_buffers_give_the_forest_of_fresh_ones(monkeypatch):
    # Later fits take their histograms from buffers earlier fits (on other data) left:
    # the same model bit for bit as with fresh arrays (stale contents, or a buffer
    # lent twice, would change the splits).
    from shardlearn.data import Dataset
    from shardlearn.ensemble import RandomForestClassifier
    from shardlearn.testing import session
    from shardlearn.testing.data import make_integer_tree_data
    from shardlearn.testing.models import assert_same_forest

    X, y, _, _ = make_integer_tree_data(3, n=6000, d=8, classes=True)
    X2, y2, _, _ = make_integer_tree_data(4, n=6000, d=8, classes=True)

    def fit(X, y):
        # Deep levels of 12 trees: several MB of histograms, so the pools are used;
        # 4 shards on 2 workers, so the coordinator adds up parts.
        ds = Dataset.from_arrays(X, y, n_shards=4)
        return RandomForestClassifier(n_estimators=12, max_depth=9, random_state=0).fit(ds)

    with session("local", n_workers=2):
        with monkeypatch.context() as m:
            m.setattr(S, "MIN_BYTES", 1 << 62)    # nothing pooled: fresh arrays
            want = fit(X, y).forest_
        fit(X2, y2)
        for _ in range(2):
            assert_same_forest(fit(X, y).forest_, want)
        assert POOL.nbytes > 0                  # the pool was used


def test_a_pool_of_its_own_caps_keeps_them_through_pickling():
    import pickle

    pool = S.ScratchPool(max_buffers=2, max_kept_bytes=3 << 20)
    held = [pool.empty((1 << 20,), np.uint8) for _ in range(3)]
    assert pool.nbytes == 2 << 20                  # two kept, the third lent once
    big = pool.empty((2 << 20,), np.uint8)         # over the byte cap with both held
    assert pool.nbytes == 2 << 20
    copy = pickle.loads(pickle.dumps(pool))
    assert (copy.max_buffers, copy.max_kept_bytes, copy.nbytes) == (2, 3 << 20, 0)
    del held, big


def test_a_larger_array_grows_into_a_free_buffers_reserve_and_only_lent_bytes_count():
    pool = S.ScratchPool()
    a = pool.empty((2 << 20,), np.uint8)
    at, reserved = _addr(a), pool.reserved_bytes
    assert reserved >= S.HEADROOM * (2 << 20) or reserved == S.MAX_KEPT_BYTES
    assert pool.nbytes == 2 << 20                  # the untouched reserve is not counted
    del a
    b = pool.empty((1 << 20,), np.float64)         # 8 MB: the same buffer, grown into
    assert _addr(b) == at and pool.reserved_bytes == reserved and pool.nbytes == 8 << 20
    c = pool.empty((2 << 20,), np.uint8)           # `b` is alive: a buffer of its own
    assert not np.shares_memory(b, c) and pool.nbytes == 10 << 20
    del b
    d = pool.empty((3 << 20,), np.uint8)           # lent 8 MB before: no new pages taken
    assert _addr(d) == at and pool.nbytes == 10 << 20


def test_growing_in_place_keeps_to_the_byte_cap():
    pool = S.ScratchPool(max_kept_bytes=4 << 20)
    a = pool.empty((1 << 20,), np.uint8)
    at = _addr(a)
    assert pool.reserved_bytes == 4 << 20          # the reserve stops at the cap
    del a
    b = pool.empty((3 << 20,), np.uint8)
    assert _addr(b) == at and pool.nbytes == 3 << 20
    del b
    big = pool.empty((5 << 20,), np.uint8)         # past the cap: lent once, not kept
    assert not any(np.shares_memory(big, buf) for buf in pool._bufs)
    assert pool.nbytes == 3 << 20


def test_a_reserve_the_os_refuses_becomes_a_buffer_of_the_size_asked(monkeypatch):
    monkeypatch.setattr(S, "HEADROOM", 1 << 40)    # 2**60 bytes: no OS grants that
    pool = S.ScratchPool(max_kept_bytes=1 << 62)
    a = pool.empty((1 << 20,), np.uint8)
    assert pool.reserved_bytes == 1 << 20 and np.shares_memory(a, pool._bufs[0])
