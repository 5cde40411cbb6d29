"""Coordinator checkpoints: a fit resumed after the driver dies ends with the same model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from shardlearn.linear_model import LinearSVC, LogisticRegression
from shardlearn.runtime.checkpoint import CheckpointMismatchError, CheckpointStore
from shardlearn.testing import make_logistic, session


def test_store_round_trip_and_fingerprint(tmp_path):
    url = str(tmp_path / "ck.npz")
    store = CheckpointStore(url, every=2, fingerprint={"a": 1})
    assert not store.maybe_save(1, lambda: ({"x": np.arange(3.0)}, {"f": 1.5}))
    assert store.maybe_save(2, lambda: ({"x": np.arange(3.0)}, {"f": 1.5}))
    step, arrays, meta = CheckpointStore(url, fingerprint={"a": 1}).load()
    assert step == 2 and meta == {"f": 1.5} and np.array_equal(arrays["x"], np.arange(3.0))
    with pytest.raises(CheckpointMismatchError, match="another fit"):
        CheckpointStore(url, fingerprint={"a": 2}).load()
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        CheckpointStore(str(tmp_path / "missing.npz")).load()
    with pytest.raises(ValueError):
        CheckpointStore(url, every=0)
    # Written atomically: no temporary files left beside it.
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cls", [LogisticRegression, LinearSVC])
def test_resume_from_an_intermediate_checkpoint_is_bit_identical(cls, tmp_path):
    X, y = make_logistic(3000, 8, n_classes=3, random_state=3)
    with session("local", n_workers=2):
        full = cls(tol=1e-8, max_iter=200).fit(X, y)
        # A fit stopped by max_iter=4 leaves its state at iteration 4; continuing it
        # with the full budget (stopping rules may change) lands where the
        # uninterrupted fit did.
        with pytest.warns(Warning, match="did not converge"):
            cls(tol=1e-8, max_iter=4).fit(X, y, checkpoint=str(tmp_path / "b.npz"))
        resumed = cls(tol=1e-8, max_iter=200).fit(X, y, resume=str(tmp_path / "b.npz"))
    assert full.fit_report_.n_iter > 4
    assert np.array_equal(resumed.coef_, full.coef_)
    assert np.array_equal(resumed.intercept_, full.intercept_)
    assert resumed.fit_report_.objective_history == full.fit_report_.objective_history


@pytest.mark.timeout(120)
def test_resume_rejects_other_data_and_trust_ncg(tmp_path):
    X, y = make_logistic(2000, 5, random_state=1)
    with session("local", n_workers=2):
        LogisticRegression(max_iter=50).fit(X, y, checkpoint=str(tmp_path / "c.npz"))
        with pytest.raises(CheckpointMismatchError, match="n_rows"):
            LogisticRegression(max_iter=50).fit(X[:1500], y[:1500], resume=str(tmp_path / "c.npz"))
        with pytest.raises(CheckpointMismatchError, match="params"):
            LogisticRegression(C=3.0, max_iter=50).fit(X, y, resume=str(tmp_path / "c.npz"))
        with pytest.raises(ValueError, match="lbfgs"):
            LogisticRegression(solver="trust-ncg").fit(X, y, checkpoint=str(tmp_path / "d.npz"))
        with pytest.raises(ValueError, match="checkpoint_every"):
            LogisticRegression().fit(X, y, checkpoint=str(tmp_path / "d.npz"), checkpoint_every=0)


_CRASHING_FIT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import shardlearn
    from shardlearn.linear_model import LogisticRegression
    from shardlearn.runtime.checkpoint import CheckpointStore
    from shardlearn.testing import make_logistic

    crash_at = int(sys.argv[2])
    original = CheckpointStore.save

    def save_then_die(self, step, arrays, meta):
        original(self, step, arrays, meta)
        if step == crash_at:            # the driver process dies right after a checkpoint
            os.kill(os.getpid(), signal.SIGKILL)

    CheckpointStore.save = save_then_die
    X, y = make_logistic(4000, 12, n_classes=3, random_state=5)
    shardlearn.init("local", n_workers=2)
    LogisticRegression(tol=1e-8, max_iter=300).fit(X, y, checkpoint=sys.argv[1])
    print("finished without crashing")
""")


@pytest.mark.timeout(180)
def test_driver_killed_at_step_k_then_resume_gives_the_same_model(tmp_path):
    url = str(tmp_path / "run.npz")
    script = tmp_path / "crash.py"
    script.write_text(_CRASHING_FIT)
    proc = subprocess.run([sys.executable, str(script), url, "5"], capture_output=True, text=True,
                          timeout=150)
    assert proc.returncode == -9, proc.stdout + proc.stderr      # really SIGKILLed
    assert "finished" not in proc.stdout
    X, y = make_logistic(4000, 12, n_classes=3, random_state=5)
    with session("local", n_workers=3):                          # another worker count, too
        uninterrupted = LogisticRegression(tol=1e-8, max_iter=300).fit(X, y)
        resumed = LogisticRegression(tol=1e-8, max_iter=300).fit(X, y, resume=url)
    assert uninterrupted.fit_report_.n_iter > 5
    assert resumed.fit_report_.n_iter == uninterrupted.fit_report_.n_iter
    assert np.array_equal(resumed.coef_, uninterrupted.coef_)
    assert np.array_equal(resumed.intercept_, uninterrupted.intercept_)
    # The resumed fit did only the iterations after the crash.
    assert resumed.fit_report_.extra["function_evaluations"] < \
        uninterrupted.fit_report_.extra["function_evaluations"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n_init", [1, 3])
def test_kmeans_resume_at_every_pass_is_bit_identical(n_init, tmp_path, monkeypatch):
    """Resume KMeans from checkpoints taken after Lloyd passes (several runs, the best
    kept across them, the seed RNG restored): every resumed fit equals the full one."""
    from shardlearn.cluster import KMeans

    X = np.random.default_rng(8).normal(size=(3000, 4))
    X[:1000] += 4
    X[1000:2000] -= 4
    # random_state=None: only a restored RNG state can give the same seeds again.
    params = dict(n_clusters=4, n_init=n_init, max_iter=20, tol=0.0, random_state=None)
    snapshots = []
    original = CheckpointStore.save

    def keep_every(self, step, arrays, meta):
        original(self, step, arrays, meta)
        path = tmp_path / f"pass{step}.npz"
        path.write_bytes((tmp_path / "ck.npz").read_bytes())
        snapshots.append(str(path))

    with session("local", n_workers=2):
        monkeypatch.setattr(CheckpointStore, "save", keep_every)
        full = KMeans(**params).fit(X, checkpoint=str(tmp_path / "ck.npz"))
        monkeypatch.setattr(CheckpointStore, "save", original)
        assert len(snapshots) >= 3
        total = _calls(full, "lloyd")
        for snap in snapshots[:: max(1, len(snapshots) // 6)] + snapshots[-1:]:
            again = KMeans(**params).fit(X, resume=snap)
            assert np.array_equal(again.cluster_centers_, full.cluster_centers_), snap
            assert np.array_equal(again.labels_, full.labels_)
            assert again.inertia_ == full.inertia_ and again.n_iter_ == full.n_iter_
            # It continued: only the passes after the checkpoint ran.
            done = int(snap.rsplit("pass", 1)[1].split(".")[0])
            assert _calls(again, "lloyd") == total - done


def _calls(model, step):
    return sum(s.calls for s in model.fit_report_.steps if s.name == step)
