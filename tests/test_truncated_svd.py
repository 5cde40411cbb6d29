"""Distributed TruncatedSVD against scipy's svds and scikit-learn's TruncatedSVD.

The test matrices have a decaying spectrum (column scales 0.9^j), as term-document
matrices do; with a flat spectrum any randomized SVD needs many more power
iterations to reach 1e-6 in the singular values.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import svds
from sklearn.decomposition import TruncatedSVD as SkTruncatedSVD
from sklearn.utils.estimator_checks import parametrize_with_checks

import shardlearn
from shardlearn.algorithms.decomposition import fit_randomized_spectrum
from shardlearn.data import Dataset
from shardlearn.decomposition import TruncatedSVD
from shardlearn.runtime import Session, steps_started
from shardlearn.runtime.engines import LocalEngine


def make_sparse_decaying(n=3000, d=300, density=0.03, decay=0.9, random_state=1):
    """A CSR matrix whose column scales (and so singular values) decay geometrically."""
    rng = np.random.default_rng(random_state)
    X = sp.random(n, d, density=density, format="csr", random_state=random_state,
                  data_rvs=lambda k: rng.normal(size=k))
    return sp.csr_matrix(X @ sp.diags(decay ** np.arange(d)))


def svds_values(X, k):
    return np.sort(svds(X, k=k, tol=0, random_state=0)[1])[::-1]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_singular_values_match_svds(local_session, kind):
    X = make_sparse_decaying()
    if kind == "dense":
        X = X.toarray() + 0.01  # dense and uncentred: the constant shows up as a component
    ds = Dataset.from_arrays(X, n_shards=6)
    model = TruncatedSVD(n_components=10, random_state=0).fit(ds)
    np.testing.assert_allclose(model.singular_values_, svds_values(X, 10), rtol=1e-6)
    # Components are orthonormal right singular vectors: X^T X v = s^2 v.
    V = model.components_
    np.testing.assert_allclose(V @ V.T, np.eye(10), atol=1e-12)
    XtXV = np.asarray(X.T @ (X @ V.T))
    np.testing.assert_allclose(XtXV, V.T * model.singular_values_**2,
                               atol=1e-6 * model.singular_values_[0] ** 2)


@pytest.mark.timeout(120)
def test_attributes_match_definitions_and_sklearn(local_session):
    X = make_sparse_decaying(n=2000, d=120)
    model = TruncatedSVD(n_components=6, n_iter=12, random_state=0).fit(X)
    T = model.transform(X)
    # explained_variance_: variance (ddof=0) of the scores; ratio: over the total column variance.
    np.testing.assert_allclose(model.explained_variance_, T.var(axis=0), rtol=1e-10)
    total = X.toarray().var(axis=0).sum()
    np.testing.assert_allclose(model.explained_variance_ratio_, T.var(axis=0) / total, rtol=1e-10)
    ref = SkTruncatedSVD(n_components=6, n_iter=12, random_state=1).fit(X)
    # Same sign convention as scikit-learn: the components agree as they are.
    np.testing.assert_allclose(model.components_, ref.components_, atol=1e-8)
    np.testing.assert_allclose(model.singular_values_, ref.singular_values_, rtol=1e-10)
    np.testing.assert_allclose(model.explained_variance_, ref.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(model.explained_variance_ratio_, ref.explained_variance_ratio_,
                               rtol=1e-8)
    np.testing.assert_allclose(model.fit_transform(X), T, atol=1e-12)
    # inverse_transform is the least-squares reconstruction in the component space.
    R = model.inverse_transform(T)
    np.testing.assert_allclose(R, T @ model.components_, atol=1e-12)
    np.testing.assert_allclose(model.transform(R), T, atol=1e-10)


@pytest.mark.timeout(120)
def test_more_power_iterations_never_hurt_and_report_passes(local_session):
    X = make_sparse_decaying(decay=0.97)  # slow decay: visibly better with iterations
    exact = svds_values(X, 5)
    errors = []
    for n_iter in (0, 2, 8):
        model = TruncatedSVD(n_components=5, n_iter=n_iter, random_state=3).fit(X)
        errors.append(np.abs(model.singular_values_ / exact - 1).max())
        power = next(s for s in model.fit_report_.steps if s.name == "power")
        assert power.calls == n_iter + 1
        assert np.all(model.singular_values_ <= exact * (1 + 1e-12))  # Ritz values from below
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4


# -- determinism ------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_bit_identical_across_engines_and_workers(any_session):
    X = make_sparse_decaying(n=2000, d=150)
    ds = Dataset.from_arrays(X, n_shards=5)
    model = TruncatedSVD(n_components=4, n_iter=3, random_state=11).fit(ds)
    ref_session = Session(LocalEngine(1))
    try:
        ref = fit_randomized_spectrum(ds, 4, centre=False, n_iter=3, random_state=11,
                                      score_variance=True, session=ref_session)
    finally:
        ref_session.shutdown()
    assert model.fit_report_.n_workers == any_session.n_workers
    assert np.array_equal(model.components_, ref.components)
    assert np.array_equal(model.singular_values_, ref.singular_values)
    assert np.array_equal(model.explained_variance_, ref.component_var)


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("case, params, match", [
    ("more_than_features", {"n_components": 31}, "n_features=30"),
    ("more_than_samples", {"n_components": 6}, "n_samples=5"),
    ("nan_sparse", {}, "NaN at row"),
    ("nan_dense", {}, "NaN at row 3"),
    ("one_feature", {"n_components": 1}, "1 feature"),
    ("empty", {}, "0 sample"),
])
def test_bad_input_raises_before_any_work(case, params, match):
    X = make_sparse_decaying(n=100, d=30, density=0.2)
    if case == "more_than_samples":
        X = X[:5]
    elif case == "nan_sparse":
        X.data[5] = np.nan
    elif case == "nan_dense":
        X = X.toarray()
        X[3, 2] = np.nan
    elif case == "one_feature":
        X = X[:, :1]
    elif case == "empty":
        X = X[:0]
    before = X.copy()
    steps = steps_started()
    with pytest.raises(ValueError, match=match):
        TruncatedSVD(**params).fit(X)
    assert steps_started() == steps
    if sp.issparse(X):
        np.testing.assert_array_equal(X.data, before.data)
        np.testing.assert_array_equal(X.indptr, before.indptr)
    else:
        np.testing.assert_array_equal(X, before)


@pytest.mark.timeout(60)
def test_save_load_round_trip(local_session, tmp_path):
    X = make_sparse_decaying(n=500, d=60)
    model = TruncatedSVD(n_components=3, random_state=0).fit(X)
    model.save(tmp_path / "svd")
    loaded = shardlearn.load(tmp_path / "svd")
    assert type(loaded) is TruncatedSVD and loaded.get_params() == model.get_params()
    for name in TruncatedSVD._model_attributes:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))


@pytest.mark.timeout(300)
@parametrize_with_checks([TruncatedSVD(random_state=0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)
