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

from . import storage

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
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _encode(v, f"{name}.{k}", arrays) for k, v in value.items()}}
        # Non-string keys (e.g. class_weight={0: 1.0, 1: 2.0}) would turn into strings
        # as JSON object keys: keep them, with their types, as (key, value) pairs.
        return {"__items__": [[_encode(k, f"{name}.key{i}", arrays), _encode(v, f"{name}.{i}", arrays)]
                              for i, (k, v) in enumerate(value.items())]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save attribute {name!r} of type {type(value).__name__} without pickle")


def _decode(value, arrays):
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__strings__" in value:
            vals = value["__strings__"]
            parse = _parser(value.get("types"))
            if value["kind"] == "O" and parse is not None:
                # Numbers and booleans held in an object array (e.g. classes_ of float
                # labels) come back as numbers, not as their text.
                out = np.array([parse(v) for v in vals], dtype=object)
            elif value["kind"] == "O":
                out = np.array(vals, dtype=object)
            else:
                out = np.array(vals)
            return out.reshape(value["shape"])
        if "__report__" in value:
            return _decode_report(value["__report__"])
        if "__dict__" in value:
            return {k: _decode(v, arrays) for k, v in value["__dict__"].items()}
        if "__items__" in value:
            return {_decode(k, arrays): _decode(v, arrays) for k, v in value["__items__"]}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def _parser(types):
    """How to read back one saved value of a single Python/numpy scalar type, or None."""
    if not types or len(types) != 1:
        return None
    base = types[0].rstrip("0123456789_")  # int64 -> int, float32 -> float, bool_ -> bool
    return {"int": int, "uint": int, "float": float, "bool": lambda v: v == "True"}.get(base)


def _decode_report(d):
    """A saved ``fit_report_`` back as a FitReport (other dataclasses stay dicts)."""
    from ..runtime.metrics import FitReport, StepTotals, WorkerTotals

    try:
        fields = dict(d, workers=[WorkerTotals(**w) for w in d["workers"]],
                      steps=[StepTotals(**st) for st in d["steps"]])
        return FitReport(**fields)
    except (KeyError, TypeError):
        return d


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


def save_model(estimator, path, storage_options: dict | None = None) -> Path | str:
    """Write ``estimator`` to the directory ``path`` atomically.

    ``path`` is a local directory (or ``file://`` URL): written as a temporary
    directory, then renamed into place. Or a storage URL (``s3://bucket/models/m1``,
    ``gs://``, ``hdfs://``): ``arrays.npz`` then ``model.json`` are written as single
    objects, ``model.json`` last and carrying the SHA-256 of the arrays, so a reader
    never loads a half-written or mixed model. ``storage_options`` as for the readers.
    """
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
    if not storage.is_local(path):
        return _save_remote(meta, arrays, os.fspath(path), storage_options)
    path = Path(storage.local_path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        data = _npz_bytes(arrays)
        with open(tmp / _ARRAYS, "wb") as f:
            f.write(data)
        with open(tmp / _META, "w") as f:
            json.dump(dict(meta, arrays_sha256=_sha256(data)), f, indent=1, allow_nan=True)
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


def load_model(path, storage_options: dict | None = None):
    """Load a model saved by :func:`save_model` (local path or storage URL); no pickle."""
    if not storage.is_local(path):
        return _load_remote(os.fspath(path), storage_options)
    path = Path(storage.local_path(path))
    meta_file = path / _META
    if not meta_file.exists():
        raise FileNotFoundError(f"{path} is not a shardlearn model directory (no {_META} inside).")
    meta = _parse_meta(meta_file.read_bytes(), path)
    arrays_file = path / _ARRAYS
    if not arrays_file.exists():
        raise FileNotFoundError(f"{path} is not a complete shardlearn model (no {_ARRAYS} inside).")
    return _build_estimator(meta, _read_arrays(arrays_file.read_bytes(), meta, path), path)


def _npz_bytes(arrays: dict) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _parse_meta(raw: bytes, path) -> dict:
    """``model.json``, checked to be one this shardlearn can read."""
    meta_file = f"{path}/{_META}"
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_file} is not valid JSON ({exc}): the model file is damaged; "
                         "save the model again.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_file} is not a shardlearn model file (format={got!r}).")
    version = meta.get("format_version", 0)
    if not isinstance(version, int):
        raise ValueError(f"{meta_file} has format_version {version!r}; expected an integer.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer shardlearn (format {version}); upgrade shardlearn."
        )
    for key, kind in (("class", str), ("params", dict), ("attributes", dict)):
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{meta_file} has no valid {key!r} entry ({kind.__name__} expected): "
                             "the model file is damaged; save the model again.")
    return meta


def _read_arrays(data: bytes, meta: dict, path) -> dict:
    """The arrays of ``arrays.npz``, checked against the checksum ``model.json`` holds
    (files written before checksums were kept have none)."""
    import io
    import zipfile

    expected = meta.get("arrays_sha256")
    if expected is not None and _sha256(data) != expected:
        raise ValueError(
            f"{path}: {_ARRAYS} does not match {_META} (checksum differs): the model is being "
            "overwritten right now, or was damaged or mixed with another model's files. "
            "Load it again once the writer has finished, or save the model again."
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"{path}/{_ARRAYS} cannot be read ({exc}): the model file is damaged; "
                         "save the model again.") from None


def _build_estimator(meta, arrays, path):
    cls = _resolve_class(meta["class"])
    try:
        est = cls(**{k: _decode(v, arrays) for k, v in meta["params"].items()})
        for name, value in meta["attributes"].items():
            setattr(est, name, _decode(value, arrays))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}/{_META} does not match {_ARRAYS} or {cls.__name__} "
                         f"({type(exc).__name__}: {exc}): the model file is damaged; "
                         "save the model again.") from None
    check = getattr(est, "_check_loaded", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return est


def _save_remote(meta: dict, arrays: dict, url: str, storage_options) -> str:
    """Object-store save: ``arrays.npz`` first, ``model.json`` (with its checksum) last."""
    names = storage.list_names(url, storage_options)
    if names and _META not in names:
        raise FileExistsError(
            f"{url} exists and is not a shardlearn model ({names[:5]} inside, no {_META}); "
            "refusing to overwrite it. Choose another URL or remove it yourself."
        )
    data = _npz_bytes(arrays)
    meta = dict(meta, arrays_sha256=_sha256(data))
    storage.write_bytes_atomic(storage.join(url, _ARRAYS), data, storage_options)
    body = json.dumps(meta, indent=1, allow_nan=True).encode()
    storage.write_bytes_atomic(storage.join(url, _META), body, storage_options)
    return url


def _load_remote(url: str, storage_options):
    try:
        raw = storage.read_bytes(storage.join(url, _META), storage_options)
    except storage.StorageError as exc:
        if "does not exist" in str(exc):
            raise FileNotFoundError(
                f"{url} is not a shardlearn model (no {_META} there). Check the URL."
            ) from None
        raise
    meta = _parse_meta(raw, url)
    data = storage.read_bytes(storage.join(url, _ARRAYS), storage_options)
    return _build_estimator(meta, _read_arrays(data, meta, url), url)


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
