"""Saving and loading fitted models without pickle: ``model.json`` + ``arrays.npz``.

A model directory holds the estimator's class, its parameters and its fitted
attributes. Numeric arrays go to ``arrays.npz`` (read with ``allow_pickle=False``);
everything else is JSON. Loading only instantiates shardlearn estimator classes.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "shardlearn-model"
FORMAT_VERSION = 1
_META = "model.json"
_ARRAYS = "arrays.npz"


def _encode(value, name, arrays):
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            arrays[name] = value
            return {"__array__": name}
        if value.dtype.kind in "OUS":
            return {"__strings__": [str(v) for v in value.ravel()], "shape": list(value.shape),
                    "kind": value.dtype.kind,
                    "types": sorted({type(v).__name__ for v in value.ravel()})}
        raise TypeError(f"cannot save attribute {name!r} of dtype {value.dtype} without pickle")
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value):
        return {"__report__": _jsonable(dataclasses.asdict(value))}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{name}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {"__dict__": {k: _encode(v, f"{name}.{k}", arrays) for k, v in value.items()}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save attribute {name!r} of type {type(value).__name__} without pickle")


def _decode(value, arrays):
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__strings__" in value:
            vals = value["__strings__"]
            if value.get("types") == ["int"]:
                out = np.array([int(v) for v in vals], dtype=object)
            elif value["kind"] == "O":
                out = np.array(vals, dtype=object)
            else:
                out = np.array(vals)
            return out.reshape(value["shape"])
        if "__report__" in value:
            return value["__report__"]
        if "__dict__" in value:
            return {k: _decode(v, arrays) for k, v in value["__dict__"].items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def save_model(estimator, path) -> Path:
    """Write ``estimator`` to the directory ``path`` atomically (temp dir + rename)."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    cls = type(estimator)
    arrays: dict[str, np.ndarray] = {}
    params = {k: _encode(v, f"param.{k}", arrays) for k, v in estimator.get_params(deep=False).items()}
    attrs = {}
    for name in estimator._model_attributes + ("n_features_in_", "feature_names_in_", "fit_report_"):
        if hasattr(estimator, name):
            attrs[name] = _encode(getattr(estimator, name), name, arrays)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "shardlearn_version": _version(), "params": params, "attributes": attrs,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with open(tmp / _META, "w") as f:
            json.dump(meta, f, indent=1, allow_nan=True)
        np.savez(tmp / _ARRAYS, **arrays)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _replace_dir(new: Path, target: Path):
    if not target.exists():
        os.replace(new, target)
        return
    if not (target / _META).exists():
        raise FileExistsError(
            f"{target} exists and is not a shardlearn model directory; refusing to overwrite it. "
            "Choose another path or remove it yourself."
        )
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def load_model(path):
    """Load a model saved by :func:`save_model`; no cluster and no pickle needed."""
    path = Path(path)
    meta_file = path / _META
    if not meta_file.exists():
        raise FileNotFoundError(f"{path} is not a shardlearn model directory (no {_META} inside).")
    with open(meta_file) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file} is not a shardlearn model file (format={meta.get('format')!r}).")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer shardlearn (format {meta['format_version']}); upgrade shardlearn."
        )
    cls = _resolve_class(meta["class"])
    with np.load(path / _ARRAYS, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    est = cls(**{k: _decode(v, arrays) for k, v in meta["params"].items()})
    for name, value in meta["attributes"].items():
        setattr(est, name, _decode(value, arrays))
    return est


def _resolve_class(qualname: str):
    module, _, name = qualname.rpartition(".")
    if not module.startswith("shardlearn."):
        raise ValueError(f"refusing to load class {qualname!r}: only shardlearn estimators can be loaded.")
    cls = getattr(importlib.import_module(module), name, None)
    from ..base import DistributedEstimatorMixin

    if not (isinstance(cls, type) and issubclass(cls, DistributedEstimatorMixin)):
        raise ValueError(f"{qualname!r} is not a shardlearn estimator.")
    return cls


def _version():
    from .._version import __version__

    return __version__
