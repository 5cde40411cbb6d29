"""Coordinator checkpoints: the state a fit needs to resume after the driver dies.

A checkpoint is one ``.npz`` object (arrays plus a JSON ``meta`` entry) written
atomically to a local path or a storage URL (temp name + rename, or one object
put), so a crash while writing leaves the previous checkpoint intact. No pickle.
"""

from __future__ import annotations

import io
import json

import numpy as np

from ..io import storage

_META_KEY = "__meta__"


class CheckpointMismatchError(ValueError):
    """The checkpoint belongs to another fit (other estimator, parameters or data shape)."""


class CheckpointStore:
    """Save and load one fit's coordinator state at ``url``.

    Parameters
    ----------
    url : str
        A local path or storage URL of the checkpoint file.
    every : int
        Save every ``every`` iterations (``maybe_save``).
    fingerprint : dict
        What identifies the fit (estimator, parameters, data shape); a resume
        from a checkpoint with another fingerprint is refused.
    storage_options : dict, optional
    """

    def __init__(self, url, *, every: int = 1, fingerprint: dict | None = None,
                 storage_options: dict | None = None):
        if every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {every}.")
        self.url = str(url)
        self.every = int(every)
        self.fingerprint = _jsonable(fingerprint or {})
        self.storage_options = storage_options
        self.saved = 0
        self._loaded = None

    def save(self, step: int, arrays: dict, meta: dict) -> None:
        payload = {"step": int(step), "fingerprint": self.fingerprint, "state": _jsonable(meta)}
        buf = io.BytesIO()
        blob = np.frombuffer(json.dumps(payload).encode(), dtype=np.uint8)
        np.savez(buf, **{_META_KEY: blob}, **arrays)
        storage.write_bytes_atomic(self.url, buf.getvalue(), self.storage_options)
        self.saved += 1

    def maybe_save(self, step: int, state_fn) -> bool:
        """Save ``state_fn()`` (-> arrays, meta) when ``step`` is a multiple of ``every``."""
        if step % self.every:
            return False
        self.save(step, *state_fn())
        return True

    def load(self) -> tuple[int, dict, dict]:
        """``(step, arrays, meta)`` of the checkpoint; checks it belongs to this fit.

        Read once: estimators load it while validating input, before any work.
        """
        if self._loaded is None:
            self._loaded = self._read()
        return self._loaded

    def _read(self) -> tuple[int, dict, dict]:
        if not storage.exists(self.url, self.storage_options):
            raise FileNotFoundError(
                f"No checkpoint at {self.url}; pass the URL a previous fit(..., checkpoint=URL) "
                "wrote, or fit without resume=."
            )
        data = storage.read_bytes(self.url, self.storage_options)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if _META_KEY not in npz.files:
                raise ValueError(f"{self.url} is not a shardlearn checkpoint.")
            payload = json.loads(npz[_META_KEY].tobytes().decode())
            arrays = {k: npz[k] for k in npz.files if k != _META_KEY}
        if payload["fingerprint"] != self.fingerprint:
            diff = sorted(k for k in set(payload["fingerprint"]) | set(self.fingerprint)
                          if payload["fingerprint"].get(k) != self.fingerprint.get(k))
            raise CheckpointMismatchError(
                f"The checkpoint at {self.url} was written by another fit (differs in {diff}); "
                "resume with the same estimator parameters and data, or start a new fit."
            )
        return payload["step"], arrays, payload["state"]


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)
