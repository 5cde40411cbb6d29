"""Storage URLs: local paths, ``file://``, ``s3://``, ``gs://`` and ``hdfs://``.

Every remote file system goes through `fsspec <https://filesystem-spec.readthedocs.io>`_:

- ``s3://bucket/key`` (S3, MinIO, Ceph, ...) via ``s3fs``. The endpoint, credentials and
  region come from the standard AWS configuration of the process that reads
  (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``
  / ``AWS_DEFAULT_REGION``, ``~/.aws``, instance roles), or from ``storage_options``
  (``{"endpoint_url": ..., "key": ..., "secret": ..., "client_kwargs": {"region_name": ...}}``).
- ``hdfs://namenode:port/path`` via pyarrow's ``HadoopFileSystem`` (needs a JVM and libhdfs).
- ``gs://bucket/key`` when ``gcsfs`` is installed.
- Plain paths and ``file://`` URLs: the local file system.

Where credentials are resolved: ``storage_options`` travel with every shard source to
the workers (treat them as secrets of a trusted cluster); anything left out is
resolved by each worker from *its own* environment, as a cluster's nodes normally
have (instance roles, ``~/.aws``, environment variables of the worker processes).

Writes are atomic: a local file or directory is written under a temporary name and
renamed into place; an object store receives each object in a single put (a
reader sees the old object or the new one, never a partial one).
"""

from __future__ import annotations

import contextlib
import glob as _glob
import os
import tempfile
from dataclasses import dataclass, field

#: Protocols that name the local file system.
LOCAL_PROTOCOLS = ("", "file", "local")

#: Packages that provide each remote protocol (for install hints).
_PROTOCOL_PACKAGES = {
    "s3": "s3fs (pip install 'shardlearn[s3]' or pip install s3fs)",
    "s3a": "s3fs (pip install 'shardlearn[s3]' or pip install s3fs)",
    "gs": "gcsfs (pip install gcsfs)",
    "gcs": "gcsfs (pip install gcsfs)",
    "hdfs": "pyarrow with a JVM and libhdfs (set JAVA_HOME, HADOOP_HOME and CLASSPATH)",
    "abfs": "adlfs (pip install adlfs)",
    "az": "adlfs (pip install adlfs)",
}

_CREDENTIALS_HINT = {
    "s3": ("pass storage_options={'key': ..., 'secret': ..., 'endpoint_url': ...} or set "
           "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL, AWS_REGION for "
           "S3-compatible stores) in the environment of the driver and of every worker"),
    "gs": "pass storage_options={'token': ...} or set GOOGLE_APPLICATION_CREDENTIALS",
    "hdfs": "check the namenode address, and the Kerberos ticket or user (storage_options={'user': ...})",
}


class StorageError(OSError):
    """A storage URL could not be listed, read or written: names the URL and how to fix it."""


def split_protocol(url: str) -> tuple[str, str]:
    """``("s3", "bucket/key")`` for ``"s3://bucket/key"``; ``("", path)`` for a plain path."""
    text = os.fspath(url)
    if "://" in text:
        proto, rest = text.split("://", 1)
        # Windows drive letters ("C://x") are not protocols.
        if len(proto) > 1:
            return proto.lower(), rest
    return "", text


def is_local(url) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return split_protocol(url)[0] in LOCAL_PROTOCOLS


def local_path(url) -> str:
    """The file-system path of a local URL (``file:///tmp/x`` -> ``/tmp/x``)."""
    proto, rest = split_protocol(url)
    if proto not in LOCAL_PROTOCOLS:
        raise ValueError(f"{url} is not a local path.")
    return rest if proto else os.fspath(url)


def has_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def storage_error(url: str, exc: BaseException, action: str = "read") -> StorageError:
    """A StorageError naming ``url``, what went wrong and how to fix it."""
    proto = split_protocol(url)[0] or "file"
    base = "s3" if proto in ("s3", "s3a") else ("gs" if proto in ("gs", "gcs") else proto)
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, ImportError):
        pkg = _PROTOCOL_PACKAGES.get(proto, f"an fsspec implementation for {proto}://")
        return StorageError(f"cannot {action} {url}: the {proto}:// protocol needs {pkg}.")
    name = type(exc).__name__
    msg = _first_line(exc)
    if isinstance(exc, FileNotFoundError) or name in ("NoSuchKey", "NoSuchBucket"):
        return StorageError(f"cannot {action} {url}: it does not exist ({msg}). Check the URL.")
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"cannot {action} {url}: it is a directory; name a file inside it.")
    hint = _CREDENTIALS_HINT.get(base)
    credential_words = ("credential", "access denied", "accessdenied", "forbidden", "403",
                        "signature", "invalidaccesskeyid", "expiredtoken", "permission")
    if isinstance(exc, PermissionError) or any(w in msg.lower() or w in name.lower()
                                               for w in credential_words):
        return StorageError(
            f"cannot {action} {url}: access denied or missing credentials ({name}: {msg}). "
            + (f"Check the credentials: {hint}." if hint else "Check the file permissions.")
        )
    if "libjvm" in msg or "libhdfs" in msg:
        return StorageError(
            f"cannot {action} {url}: the HDFS client is not available here ({msg}). "
            f"hdfs:// needs {_PROTOCOL_PACKAGES['hdfs']}."
        )
    return StorageError(
        f"cannot {action} {url} ({name}: {msg}). Check the URL, the network path to the "
        "storage service" + (f", and the credentials: {hint}" if hint else "") + "."
    )


def get_filesystem(protocol: str, options: dict | None = None):
    """An fsspec file system for ``protocol`` (fsspec caches instances per options)."""
    import fsspec

    return fsspec.filesystem(protocol, **dict(options or {}))


def url_to_fs(url, storage_options: dict | None = None):
    """``(fs, path)`` for a URL; raises :class:`StorageError` naming the URL."""
    import fsspec.core

    text = os.fspath(url)
    proto, _ = split_protocol(text)
    if proto in LOCAL_PROTOCOLS:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), os.path.abspath(local_path(text))
    try:
        return fsspec.core.url_to_fs(text, **dict(storage_options or {}))
    except Exception as exc:  # noqa: BLE001 - import errors, JVM errors, bad options
        raise storage_error(text, exc, "open") from None


@dataclass(frozen=True)
class FileLocation:
    """One file in storage: small and picklable, rebuilt into a file system where used.

    ``protocol`` and ``options`` (the file system's constructor arguments, e.g. an
    S3 endpoint or an HDFS namenode) rebuild the file system on a worker; ``path``
    is the path within it.
    """

    protocol: str
    path: str
    options: dict = field(default_factory=dict)
    size: int = -1

    @property
    def url(self) -> str:
        if self.protocol in LOCAL_PROTOCOLS:
            return self.path
        if self.protocol == "hdfs":
            host, port = self.options.get("host"), self.options.get("port")
            netloc = "" if not host or host == "default" else f"{host}:{port}" if port else host
            return f"hdfs://{netloc}{self.path}"
        return f"{self.protocol}://{self.path}"

    @property
    def is_local(self) -> bool:
        return self.protocol in LOCAL_PROTOCOLS

    def filesystem(self):
        if self.is_local:
            from fsspec.implementations.local import LocalFileSystem

            return LocalFileSystem()
        return get_filesystem(self.protocol, self.options)

    def open(self, mode: str = "rb", **kwargs):
        """Open for reading (local files directly, remote through fsspec)."""
        try:
            if self.is_local:
                return open(self.path, mode)  # noqa: SIM115 - caller closes
            return self.filesystem().open(self.path, mode, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise storage_error(self.url, exc) from None

    def __str__(self) -> str:
        return self.url


def _protocol_of(fs) -> str:
    proto = fs.protocol
    if isinstance(proto, (tuple, list)):
        proto = proto[0]
    return "file" if proto in LOCAL_PROTOCOLS else proto


def expand_files(urls, storage_options: dict | None = None, *, suffixes: tuple[str, ...] = (),
                 what: str = "data") -> list[FileLocation]:
    """Resolve a path, a directory, a glob or a list of them into files, in a stable order.

    Directories are searched recursively for files ending in one of ``suffixes``
    (skipping hidden files and markers such as ``_SUCCESS``); globs and
    directories are sorted by path; a list keeps its order. Reads listings only.
    """
    if isinstance(urls, (str, os.PathLike)):
        urls = [urls]
    urls = [os.fspath(u) for u in urls]
    if not urls:
        raise ValueError(f"No {what} files given; pass a path, a directory, a glob or a list of them.")
    out: list[FileLocation] = []
    for url in urls:
        fs, path = url_to_fs(url, storage_options)
        proto = _protocol_of(fs)
        options = {} if proto == "file" else dict(getattr(fs, "storage_options", {}) or {})
        found = _expand_one(fs, path, url, suffixes, what)
        for p, size in found:
            out.append(FileLocation(proto, p, options, size))
    seen: set[tuple[str, str]] = set()
    for loc in out:
        key = (loc.protocol, loc.path)
        if key in seen:
            raise ValueError(
                f"{loc.url} is listed more than once in the {what} files; its rows would be "
                "used twice. Remove the duplicate path or overlapping glob."
            )
        seen.add(key)
    return out


def _visible(rel: str) -> bool:
    return not any(part.startswith((".", "_")) for part in rel.replace("\\", "/").split("/") if part)


def _expand_one(fs, path: str, url: str, suffixes, what) -> list[tuple[str, int]]:
    try:
        if has_glob(path):
            if isinstance(fs, _local_fs_class()):
                matches = sorted(_glob.glob(path, recursive=True))
                infos = [(m, os.path.getsize(m)) for m in matches if os.path.isfile(m)]
            else:
                found = fs.glob(path, detail=True)
                infos = sorted((p, int(i.get("size") or 0)) for p, i in found.items()
                               if i.get("type") != "directory")
            if not infos:
                raise ValueError(f"No {what} files match {url}; check the pattern and the location.")
            return infos
        info = fs.info(path)
        if info.get("type") == "directory":
            listing = fs.find(path, detail=True)
            infos = []
            base = path.rstrip("/")
            for p, i in sorted(listing.items()):
                rel = p[len(base):].lstrip("/")
                if i.get("type") == "directory" or not _visible(rel):
                    continue
                if suffixes and not rel.lower().endswith(suffixes):
                    continue
                infos.append((p, int(i.get("size") or 0)))
            if not infos:
                kinds = ", ".join(suffixes) if suffixes else "any"
                raise ValueError(f"No {what} files ({kinds}) in the directory {url}.")
            return infos
        return [(path, int(info.get("size") or 0))]
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - storage errors come in many types
        raise storage_error(url, exc, "list") from None


def _local_fs_class():
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem


#: Options always kept as strings by :func:`parse_storage_options`.
_STRING_OPTIONS = {"key", "secret", "token", "username", "password", "user", "profile",
                   "region_name", "endpoint_url", "host", "kerb_ticket", "project"}


def parse_storage_options(pairs) -> dict:
    """``["key=value", ...]`` (the CLI's ``--storage-option``) as a storage_options dict.

    Values are read as JSON when they parse (``true``, ``3``, ``{"a": 1}``), else kept
    as strings (credentials, endpoints and regions always stay strings); a dotted key sets a nested option
    (``client_kwargs.region_name=eu-west-1`` -> ``{"client_kwargs": {"region_name": ...}}``).
    """
    import json

    out: dict = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"storage option {pair!r} is not key=value (e.g. endpoint_url=http://host:9000).")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ValueError(f"storage option {pair!r} has an empty key.")
        *parents, leaf = key.split(".")
        if leaf in _STRING_OPTIONS:
            value = raw                  # a numeric-looking key or secret stays a string
        else:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"storage option {key!r} conflicts with another option.")
        node[leaf] = value
    return out


# -- whole objects -----------------------------------------------------------------------
def join(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name


def read_bytes(url, storage_options: dict | None = None) -> bytes:
    """The whole content of one file."""
    fs, path = url_to_fs(url, storage_options)
    try:
        return fs.cat_file(path)
    except Exception as exc:  # noqa: BLE001
        raise storage_error(os.fspath(url), exc) from None


def exists(url, storage_options: dict | None = None) -> bool:
    fs, path = url_to_fs(url, storage_options)
    try:
        return bool(fs.exists(path))
    except Exception as exc:  # noqa: BLE001
        raise storage_error(os.fspath(url), exc, "check") from None


def list_names(url, storage_options: dict | None = None) -> list[str]:
    """Names directly under a directory / prefix (empty when it does not exist)."""
    fs, path = url_to_fs(url, storage_options)
    try:
        if not fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    except Exception as exc:  # noqa: BLE001
        raise storage_error(os.fspath(url), exc, "list") from None


def write_bytes_atomic(url, data: bytes, storage_options: dict | None = None) -> str:
    """Write ``data`` to ``url`` so that readers see the old content or the new, never a part.

    Local: a temporary file in the same directory, then ``os.replace``. Object
    stores: one put of the whole object (a multipart upload for large objects,
    which also becomes visible only when complete).
    """
    text = os.fspath(url)
    if is_local(text):
        path = os.path.abspath(local_path(text))
        parent = os.path.dirname(path) or "."
        if not os.path.isdir(parent):
            raise StorageError(f"cannot write {text}: the folder {parent} does not exist; create it first.")
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path
    fs, path = url_to_fs(text, storage_options)
    try:
        fs.pipe_file(path, data)
    except Exception as exc:  # noqa: BLE001
        raise storage_error(text, exc, "write") from None
    return text


def remove(url, storage_options: dict | None = None) -> None:
    fs, path = url_to_fs(url, storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


__all__ = [
    "FileLocation", "StorageError", "exists", "expand_files", "get_filesystem", "is_local",
    "join", "list_names", "local_path", "parse_storage_options", "read_bytes", "remove",
    "split_protocol",
    "storage_error", "url_to_fs", "write_bytes_atomic",
]
