"""Leases that let several writers (processes, Dask workers, machines) share one cache, local or object store.

A lease is a small JSON object ``<cache>/_leases/<name>`` holding an owner token and an expiry. It is created
exclusively (``O_EXCL`` locally, a conditional PUT ``If-None-Match`` on S3; a write-then-read-back check where a
filesystem offers neither), renewed by a heartbeat while held, and broken when it expired or when its owner is a
dead process on this host. Writers hold one per (feature set, video) while writing, and one per shared attribute
(feature-set list, failures, manifest) around its read-modify-write.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from affcli.cache.errors import CacheError

LEASE_DIR = "_leases"
TTL_S = 30.0
POLL_S = 0.05
SETTLE_S = 0.1


class LeaseBusy(CacheError):
    """A lease stayed held by another live writer for longer than the caller would wait."""


def is_url(path: str) -> bool:
    """True for an fsspec URL (s3://, gs://, memory://, file://...) rather than a local path."""
    return "://" in str(path)


def store_fs(path: str, storage_options: dict | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, root path inside it) of a cache location."""
    from fsspec.core import url_to_fs

    return url_to_fs(str(path), **(storage_options or {}))


def owner_token() -> str:
    """A token unique to this writer: host, process id and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


def _pid_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _read(fs: Any, path: str) -> dict | None:
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):  # torn by a crash mid-write: it expires a TTL after it was written
        try:
            return {"owner": "", "expires": fs.modified(path).timestamp() + TTL_S}
        except (FileNotFoundError, NotImplementedError):
            return None


def is_local(fs: Any) -> bool:
    """True for a local-disk fsspec filesystem."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _put(fs: Any, path: str, body: bytes) -> None:
    """Replace an object whole (a rename locally, one PUT on an object store), so no reader sees it torn."""
    if is_local(fs):
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        fs.pipe_file(tmp, body)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, body)


def _create(fs: Any, path: str, body: bytes, token: str) -> bool:
    """Create the lease object if absent; True if this writer now holds it."""
    if is_local(fs):  # a hard link of a complete temp file: exclusive and never seen half-written
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        fs.pipe_file(tmp, body)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    try:
        with fs.open(path, "xb") as f:
            f.write(body)
        return True
    except FileExistsError:
        return False
    except (NotImplementedError, ValueError, TypeError):
        pass  # no exclusive create on this filesystem: write, let racers settle, read back
    if fs.exists(path):
        return False
    _put(fs, path, body)
    time.sleep(SETTLE_S)
    cur = _read(fs, path)
    return cur is not None and cur.get("owner") == token


class Lease:
    """One held lease; `release()` (or leaving the `lease()` block) deletes it if it is still ours."""

    def __init__(self, fs: Any, path: str, token: str, ttl: float):
        self.fs, self.path, self.token, self.ttl = fs, path, token, ttl
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._renew, daemon=True)
        self._beat.start()

    def _body(self) -> bytes:
        return json.dumps({"owner": self.token, "expires": time.time() + self.ttl}).encode()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            cur = _read(self.fs, self.path)
            if cur is None or cur.get("owner") != self.token:
                return
            _put(self.fs, self.path, self._body())

    def release(self) -> None:
        """Stop renewing and delete the lease object if this writer still owns it."""
        self._stop.set()
        cur = _read(self.fs, self.path)
        if cur is not None and cur.get("owner") == self.token:
            try:
                self.fs.rm_file(self.path)
            except FileNotFoundError:
                pass


def acquire(fs: Any, root: str, name: str, wait: float = 4 * TTL_S, ttl: float = TTL_S) -> Lease:
    """Take lease `name` under the cache root, waiting up to `wait` s for a live holder; LeaseBusy after that."""
    path = f"{root.rstrip('/')}/{LEASE_DIR}/{name}"
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    token = owner_token()
    deadline = time.monotonic() + wait
    while True:
        body = json.dumps({"owner": token, "expires": time.time() + ttl}).encode()
        if _create(fs, path, body, token):
            return Lease(fs, path, token, ttl)
        cur = _read(fs, path)
        if cur is not None and (cur.get("expires", 0) < time.time() or _pid_dead(str(cur.get("owner", "")))):
            if _read(fs, path) == cur:  # still the stale one: break it, then race for a fresh create
                try:
                    fs.rm_file(path)
                except FileNotFoundError:
                    pass
            continue
        if time.monotonic() > deadline:
            raise LeaseBusy(f"{root}: {name} is held by another writer ({(cur or {}).get('owner', '?')}) "
                            f"for more than {wait:.0f} s")
        time.sleep(POLL_S)


@contextmanager
def lease(fs: Any, root: str, name: str, wait: float = 4 * TTL_S, ttl: float = TTL_S) -> Iterator[Lease]:
    """`with lease(fs, root, name):` hold a lease for the block."""
    held = acquire(fs, root, name, wait, ttl)
    try:
        yield held
    finally:
        held.release()
