"""Weights from the Hugging Face hub or local folders, offline-aware: a hub name is read from the local cache first,
and the network is only tried when the hub answers at all, so a missing model is one line, never a minute of the
hub client's retry warnings."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from affcli.pipeline.backbones.base import BackboneError, hub_offline, looks_local, seeded_build
from affcli.pipeline.backbones.spec import spec_name

CONFIG_DIR = Path(__file__).parent / "configs"

PROBE_TIMEOUT_S = 3.0


def hub_endpoint() -> str:
    """The hub's base URL ($HF_ENDPOINT or huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@functools.lru_cache(maxsize=4)
def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One TCP connect to the hub (cached per process): False when the name does not resolve or nobody answers.
    With a proxy in the environment the probe is skipped (the proxy decides)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    u = urlparse(endpoint or hub_endpoint())
    return _reachable(u.hostname or "huggingface.co", u.port or (443 if u.scheme == "https" else 80), timeout)


def no_network(spec: str, what: str) -> BackboneError:
    """The one-line error for weights that are neither local nor reachable."""
    why = ("HF_HUB_OFFLINE is set" if hub_offline() else f"{urlparse(hub_endpoint()).hostname} cannot be reached")
    return BackboneError(spec, f"{what} is not in the local cache and {why}: no network was reached. Download it "
                               f"where the hub answers (huggingface-cli download NAME) and copy the cache, or give a "
                               f"local folder")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (a failure is reported by us, in one line)."""
    from transformers.utils import logging as tlog

    level, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()


def fetch(spec: str, what: str, name: str, load: Callable[[str, bool], Any]) -> Any:
    """`load(path, local_files_only)` for a local folder or a hub name: the local cache first, the hub only when it
    answers; every failure is one BackboneError line naming the spec."""
    local = looks_local(name)
    if local and not Path(name).expanduser().is_dir():
        raise BackboneError(spec, f"local model folder not found: {name}")
    path = str(Path(name).expanduser()) if local else name
    try:
        return load(path, True)
    except Exception as e:  # noqa: BLE001 - a miss in the local cache falls through to the hub below
        if local:
            raise BackboneError(spec, f"cannot load {what}: {type(e).__name__}: {_first_line(e)}") from e
    if hub_offline() or not hub_reachable():
        raise no_network(spec, what) from None
    try:
        return load(path, False)
    except Exception as e:  # noqa: BLE001 - every load failure becomes one line naming the spec
        raise BackboneError(spec, f"cannot load {what}: {type(e).__name__}: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def load_pretrained(spec: str, name: str, model_cls, processor_cls=None, **kwargs: Any):
    """(model, processor or None) by `from_pretrained` from a hub name or local folder. A checkpoint that lacks
    some of the model's weights is refused (transformers would initialise them at random); a folder saved without a
    preprocessor config gets processor None (the caller's defaults)."""

    def load_model(path: str, local_only: bool):
        with quiet_transformers():
            model, info = model_cls.from_pretrained(path, local_files_only=local_only, output_loading_info=True,
                                                    **kwargs)
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise ValueError(f"the checkpoint lacks {len(missing)} weights of {model_cls.__name__} "
                             f"(e.g. {missing[0]}); is it a checkpoint of this architecture?")
        return model

    model = fetch(spec, f"{name} ({model_cls.__name__})", name, load_model)
    if processor_cls is None:
        return model, None
    local = looks_local(name)
    path = str(Path(name).expanduser()) if local else name
    for local_only in (True, False):
        if not local_only and (local or hub_offline() or not hub_reachable()):
            break
        try:
            with quiet_transformers():
                return model, processor_cls.from_pretrained(path, local_files_only=local_only)
        except Exception:  # noqa: BLE001 - a checkpoint saved without a preprocessor config: the caller's defaults
            continue
    return model, None


def tiny_or_pretrained(spec: str, seed: int, model_cls, config_cls, processor_cls, tiny_config: str,
                       **kwargs: Any):
    """(model, processor or None) of a transformers kind: `tiny` builds random weights from `configs/<tiny_config>`
    under `seed` (the offline twin tests load back), any other name goes through `load_pretrained`."""
    name = spec_name(spec)
    if name == "tiny":
        cfg = config_cls(**json.loads((CONFIG_DIR / tiny_config).read_text()))
        return seeded_build(seed, lambda: model_cls(cfg)), None
    return load_pretrained(spec, name, model_cls, processor_cls, **kwargs)


@contextlib.contextmanager
def forced_offline() -> Iterator[None]:
    """huggingface_hub in offline mode for the duration (cache only, no request, no retries)."""
    from huggingface_hub import constants

    before, env = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env


def download_guarded(spec: str, what: str, build: Callable[[], Any]) -> Any:
    """`build()` of a library that downloads from the hub itself (open_clip, timm): run as usual when the hub answers,
    else from the local cache only, a miss being the one-line `no_network` error."""
    if not hub_offline() and hub_reachable():
        return build()
    try:
        with forced_offline():
            logging.disable(logging.ERROR)  # the library's own "failed to download" log line: ours follows
            try:
                return build()
            finally:
                logging.disable(logging.NOTSET)
    except Exception as e:  # noqa: BLE001 - a miss in the local cache with no hub to ask
        raise no_network(spec, what) from e
