"""Storage for tests: a real S3-protocol server on 127.0.0.1, and helpers to watch reads.

``moto_s3_server()`` starts moto's standalone server (``pip install "moto[server]"``)
in a thread on a free local port, creates a bucket, and points the standard AWS
environment variables at it; the code under test then talks S3 over HTTP exactly
as it would to AWS or MinIO (only the endpoint differs). The server is stopped
and the environment restored when the block exits.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field

#: Credentials moto accepts (it does not check them).
TEST_KEY = "shardlearn-test-key"
TEST_SECRET = "shardlearn-test-secret"
TEST_REGION = "us-east-1"


@dataclass
class S3TestServer:
    """A running moto server: its endpoint, bucket, and ready-made storage options."""

    endpoint: str
    bucket: str
    env: dict = field(default_factory=dict)

    @property
    def storage_options(self) -> dict:
        """Explicit options (what workers in other processes need: they do not see our env)."""
        return {"endpoint_url": self.endpoint, "key": TEST_KEY, "secret": TEST_SECRET,
                "client_kwargs": {"region_name": TEST_REGION}}

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    @contextlib.contextmanager
    def checking_credentials(self):
        """While inside, the server checks request signatures (moto's own reset-auth API):
        keys it does not know get 403 InvalidAccessKeyId, as from AWS."""
        self._set_auth(b"0")
        try:
            yield
        finally:
            self._set_auth(b"inf")
            _clear_s3fs_cache()

    def _set_auth(self, count: bytes) -> None:
        import urllib.request

        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=count,
                                     method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def snapshot(self, prefix: str = "") -> dict[str, str]:
        """``{key: sha256}`` of every object under ``prefix`` (to prove reads change nothing)."""
        fs = self.filesystem()
        fs.invalidate_cache()
        out = {}
        for path in sorted(fs.find(f"{self.bucket}/{prefix}".rstrip("/"))):
            out[path] = hashlib.sha256(fs.cat_file(path)).hexdigest()
        return out


def _clear_s3fs_cache():
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    except ImportError:  # pragma: no cover - s3fs is a test dependency
        pass


@contextlib.contextmanager
def moto_s3_server(bucket: str = "shardlearn-test", *, set_env: bool = True):
    """Start moto's S3 server on 127.0.0.1 (free port), create ``bucket``, yield an S3TestServer.

    With ``set_env`` the standard variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) point at the server for the
    block, as a user's environment would point at their S3 or MinIO. Processes
    started before (e.g. Ray workers) do not see them: pass
    :attr:`S3TestServer.storage_options` there.
    """
    from moto.server import ThreadedMotoServer

    quiet = logging.getLogger("werkzeug")      # one log line per request otherwise
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": TEST_KEY,
        "AWS_SECRET_ACCESS_KEY": TEST_SECRET, "AWS_DEFAULT_REGION": TEST_REGION,
        # Never ask a cloud metadata service for credentials.
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    try:
        if set_env:
            os.environ.update(env)
        _clear_s3fs_cache()
        srv = S3TestServer(endpoint, bucket, env)
        fs = srv.filesystem()
        fs.call_s3("create_bucket", Bucket=bucket)  # us-east-1: no location constraint
        fs.invalidate_cache()
        yield srv
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _clear_s3fs_cache()
        server.stop()
        quiet.setLevel(level)


def local_snapshot(root) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (listing + contents)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return dict(sorted(out.items()))


def worker_read_log(shard, state):
    """Kernel: ``(pid, thread name, rows reads logged in this process)`` where the shard lives."""
    from ..data.readers import read_log

    return (os.getpid(), threading.current_thread().name,
            [e for e in read_log() if e["kind"] == "rows"])


def shard_digest(shard, state):
    """Kernel: SHA-256 of the shard's bytes (features, labels, weights) where it lives."""
    return digest_shard(shard)


def digest_shard(shard) -> str:
    import numpy as np

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(shard.X).tobytes())
    h.update(str(shard.X.dtype).encode())
    for a in (shard.y, shard.sample_weight):
        if a is not None:
            h.update(np.asarray(a).astype(str).tobytes() if a.dtype.kind == "O" else a.tobytes())
    return h.hexdigest()


__all__ = ["S3TestServer", "digest_shard", "local_snapshot", "moto_s3_server", "shard_digest",
           "worker_read_log"]
