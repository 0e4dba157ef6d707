"""Fetch MNIST-style datasets from mirrors, verify them, and cache them as NumPy arrays.

Datasets are declared as data (:data:`mnist_mlp.datasets.DATASETS`): their files, the SHA-256
of each file's *decompressed* IDX content, and an ordered list of mirrors. A checksum of the
content rather than of the ``.gz`` accepts a recompressed copy of the same data (Debian ships
Fashion-MNIST that way) and refuses anything else.

Each file is streamed to a temporary file inside the cache folder, decompressed, parsed,
verified, saved as ``.npy`` and only then renamed into place, so the cache never holds a
partial or unverified entry. Any failure of one source (connection error, HTTP error, time-out,
HTML instead of gzip, truncation, wrong checksum) moves on to the next; when every source
fails, one :class:`~mnist_mlp.errors.DownloadError` lists them all.

A cached array is checked against the declared checksum every time it is loaded (SHA-256 of
55 MB takes a few tens of milliseconds), so an edited or truncated cache entry is noticed and
fetched again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_mlp.datasets import DatasetSpec, Resource, get_spec
from mnist_mlp.errors import DownloadError, IdxError, MlpError, WriteError
from mnist_mlp.fsutil import atomic_write, describe
from mnist_mlp.idx import idx_header, maybe_gunzip, parse_idx

log = logging.getLogger(__name__)

ENV_HOME = "MNIST_MLP_HOME"
ENV_MIRROR = "MNIST_MLP_MIRROR"
CHUNK = 1 << 16


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``override``, else ``$MNIST_MLP_HOME``, else the user's cache folder."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    import platformdirs  # only here: it is needed only when no folder was given

    return Path(platformdirs.user_cache_dir("mnist_mlp", appauthor=False))


def sources(spec: DatasetSpec) -> list[str]:
    """Base locations to try, in order: ``$MNIST_MLP_MIRROR/<dataset>/`` then the public mirrors."""
    out = []
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if mirror:
        out.append(mirror.rstrip("/") + "/" + spec.name + "/")
    out.extend(spec.mirrors)
    return out


@dataclass
class Entry:
    """A verified dataset file in the cache."""

    resource: Resource
    path: Path
    source: str
    array: np.ndarray
    fetched: bool  # False for a cache hit

    def line(self, dataset: str, key: str) -> str:
        """What ``mlp download`` says of it: dataset, split, shape, path and source."""
        how = "downloaded from" if self.fetched else "cached, from"
        return (
            f"{dataset:<13} {key:<12} {self.array.shape!s:<15} {self.path}  ({how} {self.source})"
        )


@dataclass
class FetchOptions:
    """Network settings. Defaults suit a real network; tests shorten them."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 2  # extra attempts per source on a transient error
    backoff: float = 1.0  # seconds before the first retry, doubling after
    progress: bool = True


def ensure(
    name: str,
    root: str | os.PathLike | None = None,
    options: FetchOptions | None = None,
) -> dict[str, Entry]:
    """Make sure every file of dataset ``name`` is in the cache and verified; return them.

    Parameters
    ----------
    name : str
        A key of :data:`mnist_mlp.datasets.DATASETS`.
    root : path-like, optional
        Cache folder; see :func:`cache_root`.
    options : FetchOptions, optional

    Returns
    -------
    dict
        ``"train-images"``, ``"train-labels"``, ``"test-images"``, ``"test-labels"`` ->
        :class:`Entry`; images are uint8 of shape (n, 28, 28), labels uint8 of shape (n,).

    Raises
    ------
    DownloadError
        If some file could be had from no source; the message names each source and its failure.
    """
    spec = get_spec(name)
    options = options or FetchOptions()
    folder = cache_root(root) / spec.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MlpError(f"cannot create the cache folder {folder}: {exc.strerror}") from None
    entries = {}
    try:
        with _lock(folder):
            for resource in spec.resources:
                entries[resource.key] = _cached(folder, resource) or _fetch(
                    spec, folder, resource, options
                )
    except (OSError, WriteError) as exc:
        what = describe(exc) if isinstance(exc, OSError) else str(exc)
        raise MlpError(
            f"cannot fill the cache {folder}: {what}; point {ENV_HOME} at a writable folder with "
            f"room for the dataset"
        ) from None
    return entries


def _cached(folder: Path, resource: Resource) -> Entry | None:
    """The verified cache entry for ``resource``, or None (saying why if one was there but bad)."""
    path = folder / f"{resource.key}.npy"
    if not path.exists():
        return None
    try:
        array = np.load(path, allow_pickle=False)
        problem = _check_array(array, resource)
    except (OSError, ValueError, EOFError) as exc:
        problem = f"unreadable ({exc})"
    if problem:
        log.warning("cache entry %s is corrupt (%s); fetching it again", path, problem)
        return None
    return Entry(resource, path, _read_source(path), array, fetched=False)


def _check_array(array: np.ndarray, resource: Resource) -> str | None:
    """Why ``array`` is not the content of ``resource``, or None if it is."""
    if array.shape != resource.shape or array.dtype != np.uint8:
        return f"shape {array.shape} {array.dtype}, expected {resource.shape} uint8"
    digest = hashlib.sha256(idx_header(array.shape, array.dtype))
    digest.update(np.ascontiguousarray(array).data)
    if digest.hexdigest() != resource.sha256:
        return "sha256 mismatch"
    return None


def _read_source(npy: Path) -> str:
    try:
        return json.loads(npy.with_suffix(".json").read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def _fetch(spec: DatasetSpec, folder: Path, resource: Resource, options: FetchOptions) -> Entry:
    failures = []
    bases = sources(spec)
    for i, base in enumerate(bases):
        location = _join(base, resource.filename)
        try:
            array = _fetch_one(location, folder, resource, options)
        except _SourceFailed as exc:
            failures.append(f"{location}: {exc}")
            if i + 1 < len(bases):
                log.info("%s failed (%s); trying the next source", location, exc)
            continue
        path = folder / f"{resource.key}.npy"
        atomic_write(path, functools.partial(np.save, arr=array, allow_pickle=False))
        meta = {
            "file": resource.filename,
            "sha256": resource.sha256,
            "source": location,
            "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write(
            path.with_suffix(".json"),
            json.dumps(meta, indent=1).encode(),
        )
        return Entry(resource, path, location, array, fetched=True)
    hint = "" if os.environ.get(ENV_MIRROR) else f" (offline? set {ENV_MIRROR} to a local copy)"
    raise DownloadError(
        f"could not get {spec.name}/{resource.filename} from any source{hint}: "
        + "; ".join(failures)
    )


class _SourceFailed(Exception):
    """One source failed for one file; the next one is tried."""


def _join(base: str, filename: str) -> str:
    return base if base.endswith(filename) else base.rstrip("/") + "/" + filename


def _fetch_one(
    location: str, folder: Path, resource: Resource, options: FetchOptions
) -> np.ndarray:
    """Download ``location`` into ``folder``, verify it as ``resource``, return its array."""
    # A gzip of IDX is never much larger than the IDX itself; more than that is not our file.
    limit = resource.idx_size + (1 << 20)
    fd, tmp = tempfile.mkstemp(prefix=f".{resource.key}-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            _copy(location, out, limit, resource.filename, options)
        data = Path(tmp).read_bytes()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    try:
        content = maybe_gunzip(data, limit=resource.idx_size)
        array = parse_idx(content)
    except IdxError as exc:
        raise _SourceFailed(str(exc)) from None
    if array.shape != resource.shape or array.dtype != np.uint8:
        raise _SourceFailed(f"holds {array.dtype} {array.shape}, expected uint8 {resource.shape}")
    digest = hashlib.sha256(content).hexdigest()
    if digest != resource.sha256:
        raise _SourceFailed(
            f"sha256 {digest[:12]}... of the content does not match {resource.sha256[:12]}..."
        )
    return np.array(array)  # own the memory: the parsed view points into `data`


def _copy(location: str, out, limit: int, label: str, options: FetchOptions) -> None:
    """Copy ``location`` (URL or path) into the open file ``out``, at most ``limit`` bytes."""
    path = _local_path(location)
    if path is not None:
        try:
            with open(path, "rb") as f:
                _stream(
                    iter(lambda: f.read(CHUNK), b""),
                    out,
                    os.fstat(f.fileno()).st_size,
                    limit,
                    label,
                    options,
                )
        except OSError as exc:
            raise _SourceFailed(exc.strerror or str(exc)) from None
        return
    import requests  # imported here so that commands that never download start faster

    for attempt in range(options.retries + 1):
        out.seek(0)
        out.truncate()
        try:
            with requests.get(
                location, stream=True, timeout=(options.connect_timeout, options.read_timeout)
            ) as response:
                if response.status_code >= 400:
                    transient = response.status_code in (408, 429) or response.status_code >= 500
                    raise _HttpError(f"HTTP {response.status_code} {response.reason}", transient)
                size = int(response.headers.get("Content-Length") or 0)
                _stream(response.iter_content(CHUNK), out, size, limit, label, options)
                return
        except (_HttpError, requests.RequestException) as exc:
            reason = str(exc) if isinstance(exc, _HttpError) else _short(exc)
            transient = exc.transient if isinstance(exc, _HttpError) else _transient(exc, reason)
            if not transient or attempt == options.retries:
                raise _SourceFailed(reason) from None
            log.info("%s: %s; retrying", location, reason)
            time.sleep(options.backoff * 2**attempt)


class _HttpError(Exception):
    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def _stream(chunks, out, size: int, limit: int, label: str, options: FetchOptions) -> None:
    from tqdm import tqdm

    received = 0
    # disable=None turns the bar off when stderr is not a terminal.
    with tqdm(
        total=size or None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        leave=False,
        disable=None if options.progress else True,
    ) as bar:
        for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise _SourceFailed(f"more than {limit} bytes, far larger than the expected file")
            out.write(chunk)
            bar.update(len(chunk))
    if size and received < size:
        raise _SourceFailed(f"truncated: got {received} of {size} bytes")


def _local_path(location: str) -> Path | None:
    """The filesystem path of a folder mirror or a ``file://`` URL; None for a network URL."""
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file":
        from urllib.request import url2pathname  # only for file:// URLs; slow to import

        return Path(url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    return Path(location).expanduser()


def _transient(exc: Exception, reason: str) -> bool:
    """Whether retrying the same source could help (an unknown host or a bad URL will not)."""
    import requests

    permanent = (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
        requests.exceptions.TooManyRedirects,
    )
    return not isinstance(exc, permanent) and reason != "unknown host"


def _short(exc: Exception) -> str:
    """A one-line reason from a requests exception (they nest urllib3's long reprs)."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout) or "Read timed out" in str(exc):
        return "read timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "truncated: the connection closed early"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "NameResolutionError" in text or "Failed to resolve" in text:
            return "unknown host"
        if "IncompleteRead" in text:
            return "truncated: the connection closed early"
        for hint in ("Connection refused", "Network is unreachable", "Connection reset"):
            if hint in text:
                return hint.lower()
        return "connection failed"
    return type(exc).__name__


@contextlib.contextmanager
def _lock(folder: Path):
    """Hold an exclusive lock on ``folder`` so that concurrent processes fetch a dataset once.

    Correctness does not depend on it (every write is an atomic rename of a verified file);
    it only spares the second process a duplicate download. Locking the folder itself leaves
    no lock file behind. Where ``fcntl`` is missing (Windows), no lock is taken.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
