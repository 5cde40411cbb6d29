"""Distributed PCA against scikit-learn's exact PCA (svd_solver="full")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import PCA as SkPCA
from sklearn.utils.estimator_checks import parametrize_with_checks

import shardlearn
from shardlearn.algorithms.decomposition import fit_gram_spectrum, fit_randomized_spectrum
from shardlearn.algorithms.decomposition.kernels import centred_gram, merge_moments
from shardlearn.data import Dataset
from shardlearn.data.dataset import ShardInfo
from shardlearn.data.shard import ArraySliceSource, Shard
from shardlearn.decomposition import PCA
from shardlearn.runtime import Session, steps_started
from shardlearn.runtime.engines import LocalEngine


def make_pca_data(n=2000, d=12, *, offset=100.0, decay=0.7, random_state=0, dtype=np.float64):
    """Rotated data with well separated variances and a mean far from the origin."""
    rng = np.random.default_rng(random_state)
    scales = 10.0 * decay ** np.arange(d)
    R = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X = (rng.normal(size=(n, d)) * scales) @ R + offset * rng.normal(size=d)
    return X.astype(dtype)


def make_wide_data(n=300, d=1100, rank_decay=0.8, random_state=0):
    """More features than samples, with a quickly decaying spectrum (randomized solver's case)."""
    rng = np.random.default_rng(random_state)
    k = 40
    U = rng.normal(size=(n, k)) * rank_decay ** np.arange(k)
    V = np.linalg.qr(rng.normal(size=(d, k)))[0].T
    return 10 * U @ V + 1e-4 * rng.normal(size=(n, d)) + 3.0


def assert_matches_sklearn(ours, ref, *, atol_components=1e-8, rtol_variance=1e-10):
    assert ours.n_components_ == ref.n_components_
    # Same sign convention as scikit-learn (largest-magnitude entry positive), so the
    # components agree as they are, not only up to sign.
    np.testing.assert_allclose(ours.components_, ref.components_, rtol=0, atol=atol_components)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_,
                               rtol=rtol_variance)
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_,
                               rtol=rtol_variance)
    np.testing.assert_allclose(ours.singular_values_, ref.singular_values_, rtol=rtol_variance)
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(ours.noise_variance_, ref.noise_variance_, rtol=1e-8, atol=1e-12)
    assert ours.n_samples_ == ref.n_samples_


# -- exactness of the Gram solver -----------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("n_components", [4, None, 0.95, "mle"])
def test_gram_solver_matches_sklearn_full(local_session, n_components):
    X = make_pca_data()
    ds = Dataset.from_arrays(X, n_shards=7)
    ours = PCA(n_components=n_components).fit(ds)
    ref = SkPCA(n_components=n_components, svd_solver="full").fit(X)
    assert ours.fit_report_.extra["solver"] == "gram"
    assert_matches_sklearn(ours, ref)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=0, atol=1e-8)


@pytest.mark.timeout(120)
def test_float32_input_is_accumulated_in_float64(local_session):
    X32 = make_pca_data(offset=30.0, dtype=np.float32)
    ours = PCA(n_components=5).fit(Dataset.from_arrays(X32, n_shards=3))
    # The reference sees exactly the same (float32) values, decomposed in float64.
    ref = SkPCA(n_components=5, svd_solver="full").fit(X32.astype(np.float64))
    assert_matches_sklearn(ours, ref)


@pytest.mark.timeout(120)
def test_centred_gram_kernel_is_exact_far_from_origin():
    """One pass, chunk by chunk, with no cancellation: a mean 1e6 times the spread."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5000, 7)) + 1e6
    exact_mean = np.array([math.fsum(col) / len(col) for col in X.T])
    ref = (X - exact_mean).T @ (X - exact_mean)
    n, mean, C = centred_gram(Shard(0, X), {})
    assert n == 5000
    np.testing.assert_allclose(mean, exact_mean, rtol=1e-15)
    scale = np.abs(ref).max()
    assert np.abs(C - ref).max() < 1e-10 * scale
    # Splitting the rows anywhere and merging gives the same matrix.
    parts = [centred_gram(Shard(i, X[a:b]), {}) for i, (a, b) in enumerate([(0, 1), (1, 3000),
                                                                             (3000, 5000)])]
    merged = merge_moments(merge_moments(parts[0], parts[1]), parts[2])
    assert np.abs(merged[2] - ref).max() < 1e-10 * scale
    # The raw Gram matrix minus n m m^T (no centring) would be useless here.
    raw = X.T @ X - 5000 * np.outer(exact_mean, exact_mean)
    assert np.abs(raw - ref).max() > 1e-5 * scale


@pytest.mark.timeout(120)
def test_sparse_input_is_centred_implicitly(local_session):
    rng = np.random.default_rng(3)
    X = sp.random(1500, 30, density=0.2, format="csr", random_state=3,
                  data_rvs=lambda k: rng.normal(size=k)) @ sp.diags(0.8 ** np.arange(30))
    X = sp.csr_matrix(X)
    ref = SkPCA(n_components=6, svd_solver="full").fit(X.toarray())
    ours = PCA(n_components=6).fit(Dataset.from_arrays(X, n_shards=4))
    assert_matches_sklearn(ours, ref)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X.toarray()), atol=1e-10)
    rand = PCA(n_components=6, svd_solver="randomized", random_state=0).fit(X)
    assert_matches_sklearn(rand, ref, rtol_variance=1e-8)


# -- the randomized solver ---------------------------------------------------------------
@pytest.mark.timeout(120)
def test_randomized_solver_close_to_exact_on_wide_data(local_session):
    X = make_wide_data()
    ours = PCA(n_components=5, random_state=0).fit(Dataset.from_arrays(X, n_shards=3))
    # More than 1,000 features and few components: "auto" picks the randomized solver.
    assert ours.fit_report_.extra["solver"] == "randomized"
    ref = SkPCA(n_components=5, svd_solver="full").fit(X)
    assert_matches_sklearn(ours, ref, atol_components=1e-8, rtol_variance=1e-9)
    # 7 power iterations (5 < 10% of 300) + 1 pass each, plus the column moments pass.
    power = next(s for s in ours.fit_report_.steps if s.name == "power")
    assert power.calls == 8


@pytest.mark.timeout(120)
def test_randomized_solver_on_tall_data(local_session):
    X = make_pca_data(n=3000, d=40, decay=0.8)
    ours = PCA(n_components=6, svd_solver="randomized", iterated_power=6,
               random_state=1).fit(X)
    ref = SkPCA(n_components=6, svd_solver="full").fit(X)
    assert_matches_sklearn(ours, ref, atol_components=1e-8, rtol_variance=1e-10)


@pytest.mark.timeout(120)
def test_randomized_rank_deficient_data_still_returns_orthonormal_components(local_session):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 30)) + 7.0  # centred rank 3
    ours = PCA(n_components=6, svd_solver="randomized", random_state=0).fit(X)
    V = ours.components_
    np.testing.assert_allclose(V @ V.T, np.eye(6), atol=1e-10)
    ref = SkPCA(n_components=3, svd_solver="full").fit(X)
    np.testing.assert_allclose(ours.explained_variance_[:3], ref.explained_variance_, rtol=1e-9)
    np.testing.assert_allclose(ours.explained_variance_[3:], 0.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(ours.components_[:3]), np.abs(ref.components_), atol=1e-8)


# -- transform, whitening, inverse ----------------------------------------------------
@pytest.mark.timeout(120)
def test_whiten_transform_and_inverse_match_sklearn(local_session):
    X = make_pca_data()
    ours = PCA(n_components=5, whiten=True).fit(X)
    ref = SkPCA(n_components=5, whiten=True, svd_solver="full").fit(X)
    T = ours.transform(X)
    np.testing.assert_allclose(T, ref.transform(X), atol=1e-8)
    np.testing.assert_allclose(T.var(axis=0, ddof=1), 1.0, rtol=1e-10)
    np.testing.assert_allclose(ours.inverse_transform(T), ref.inverse_transform(T), atol=1e-8)
    np.testing.assert_allclose(ours.get_covariance(), ref.get_covariance(), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ours.get_precision(), ref.get_precision(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-8)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("whiten", [False, True])
def test_inverse_transform_round_trip(local_session, whiten):
    X = make_pca_data(n=500, d=8)
    full = PCA(whiten=whiten).fit(X)  # all components: lossless
    np.testing.assert_allclose(full.inverse_transform(full.transform(X)), X, rtol=0, atol=1e-9)
    part = PCA(n_components=3, whiten=whiten).fit(X)
    T = part.transform(X)
    # Projecting the reconstruction again gives the same scores.
    np.testing.assert_allclose(part.transform(part.inverse_transform(T)), T, atol=1e-8)
    np.testing.assert_allclose(part.fit_transform(X), T, atol=1e-10)


# -- determinism ------------------------------------------------------------------------
def _reference(ds, solver):
    ref_session = Session(LocalEngine(1))
    try:
        if solver == "gram":
            return fit_gram_spectrum(ds, session=ref_session)
        return fit_randomized_spectrum(ds, 4, n_iter=3, random_state=7, session=ref_session)
    finally:
        ref_session.shutdown()


@pytest.mark.timeout(300)
def test_bit_identical_across_engines_and_workers(any_session):
    X = make_pca_data(n=3000, d=20)
    ds = Dataset.from_arrays(X, n_shards=5)
    for solver in ("gram", "randomized"):
        model = PCA(n_components=4, svd_solver=solver, iterated_power=3, random_state=7).fit(ds)
        ref = _reference(ds, solver)
        assert model.fit_report_.n_workers == any_session.n_workers
        assert model.fit_report_.engine == any_session.engine_name
        assert np.array_equal(model.components_, ref.components[:4])
        assert np.array_equal(model.singular_values_, ref.singular_values[:4])
        assert np.array_equal(model.mean_, ref.mean)


# -- bad input: a clear ValueError before any worker runs, caller's data untouched ---------
def _empty_shard_dataset(X):
    src = [ArraySliceSource(X, None, None, 0, 50), ArraySliceSource(X, None, None, 50, 50),
           ArraySliceSource(X, None, None, 50, len(X))]
    infos = [ShardInfo(i, s.stop - s.start, 0, s) for i, s in enumerate(src)]
    return Dataset(infos, X.shape[1], has_labels=False, has_weights=False)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case, params, match", [
    ("too_many_components", {"n_components": 13}, "n_components=13 must be between 0 and"),
    ("more_than_samples", {"n_components": 6}, "min\\(n_samples, n_features\\)=5"),
    ("nan", {"n_components": 2}, "NaN at row 7"),
    ("inf_sparse", {"n_components": 2}, "infinity"),
    ("empty", {}, "0 sample"),
    ("one_sample", {}, "n_samples=1"),
    ("fraction_randomized", {"n_components": 0.5, "svd_solver": "randomized"}, "exact solver"),
    ("mle_wide", {"n_components": "mle"}, "n_samples >= n_features"),
    ("empty_shard", {"n_components": 2}, "shard 1 of the Dataset is empty"),
    ("weights", {"n_components": 2}, "does not use sample weights"),
])
def test_bad_input_raises_before_any_work(case, params, match):
    X = make_pca_data(n=100)
    if case == "more_than_samples":
        X = X[:5]
    elif case == "nan":
        X[7, 3] = np.nan
    elif case == "inf_sparse":
        X = sp.csr_matrix(X)
        X.data[11] = np.inf
    elif case == "empty":
        X = X[:0]
    elif case == "one_sample":
        X = X[:1]
    elif case == "mle_wide":
        X = X[:10]
    before = X.copy()
    data = X
    if case == "empty_shard":
        data = _empty_shard_dataset(X)
    elif case == "weights":
        data = Dataset.from_arrays(X, sample_weight=np.ones(len(X)))
    steps = steps_started()
    with pytest.raises(ValueError, match=match):
        PCA(**params).fit(data)
    assert steps_started() == steps
    if sp.issparse(X):
        np.testing.assert_array_equal(X.data, before.data)
        np.testing.assert_array_equal(X.indices, before.indices)
    else:
        np.testing.assert_array_equal(X, before)


@pytest.mark.timeout(60)
def test_transform_checks_features(local_session):
    X = make_pca_data(n=300)
    pca = PCA(n_components=3).fit(X)
    with pytest.raises(ValueError, match="12 features"):
        pca.transform(X[:, :5])
    with pytest.raises(ValueError, match="3 components"):
        pca.inverse_transform(np.ones((2, 4)))


# -- saving ----------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_save_load_round_trip(local_session, tmp_path):
    X = make_pca_data(n=400)
    pca = PCA(n_components=0.9, whiten=True).fit(X)
    pca.save(tmp_path / "pca")
    loaded = shardlearn.load(tmp_path / "pca")
    assert type(loaded) is PCA and loaded.get_params() == pca.get_params()
    for name in PCA._model_attributes:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(pca, name))
    np.testing.assert_array_equal(loaded.transform(X), pca.transform(X))
    assert loaded.fit_report_.estimator == "PCA"


# -- scikit-learn's estimator checks ------------------------------------------------------
@pytest.mark.timeout(300)
@parametrize_with_checks([PCA(), PCA(n_components=2, svd_solver="randomized", random_state=0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)
