"""The reused buffers of per-level histograms: lent again only when nothing holds them."""

import threading

import numpy as np

from shardlearn.algorithms.tree import _scratch as S


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
    huge = pool.empty((4 << 20,), np.uint8)       # over the byte cap: lent, not kept
    assert pool.nbytes <= 3 << 20
    assert not any(np.shares_memory(huge, buf) for buf in pool._bufs)


def test_each_thread_has_its_own_pool():
    mine = S.thread_pool("t")
    assert S.thread_pool("t") is mine and S.thread_pool("other") is not mine
    seen = []
    t = threading.Thread(target=lambda: seen.append(S.thread_pool("t")))
    t.start()
    t.join()
    assert seen[0] is not mine


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
        assert S.thread_pool("summed histograms").nbytes > 0      # the pools were used
