import numpy as np

from shardlearn.linear_model import LogisticRegression
from shardlearn.testing import make_logistic


def test_logistic_fits_on_both_engines_identically(local_session):
    X, y = make_logistic(500, 5)
    a = LogisticRegression().fit(X, y)
    assert a.score(X, y) > 0.6
    assert a.fit_report_.n_iter > 0


def test_ray_and_local_bit_identical(ray_cluster):
    from shardlearn.data import Dataset
    from shardlearn.testing import session

    X, y = make_logistic(3000, 6, n_classes=3)
    ds = Dataset.from_arrays(X, y, n_shards=5)
    coefs = []
    for engine in ("local", "ray"):
        with session(engine, n_workers=2):
            coefs.append(LogisticRegression().fit(ds).coef_)
    assert np.array_equal(coefs[0], coefs[1])
