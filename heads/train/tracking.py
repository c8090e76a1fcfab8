"""Experiment tracking of a run: TensorBoard event files in the run folder (always, unless turned off) and, with
`--mlflow URI`, parameters, per-epoch metrics and the run folder as artifacts on an MLflow tracking server.

The run folder stays the record: a tracking server that stops answering mid-run costs one warning line, never the
run; one that cannot be reached (or an mlflow that is not installed) is refused before training starts.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from affcli.common.notices import warn

MLFLOW_EXPERIMENT = "affcli"
MLFLOW_INSTALL = "pip install 'affcli[mlflow]'"
MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def flat_numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """{'val/p_expr': 0.4, ...}: the finite numbers of a nested dict (bools and lists left out), keys joined by '/'."""
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_numbers(v, key + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            out[key] = float(v)
    return out


def flat_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as MLflow parameters: nested keys joined by '.', values as short strings."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flat_params(v, key + "."))
        else:
            text = v if isinstance(v, str) else json.dumps(v, default=str)
            out[key] = text[:500]
    return out


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """An http(s) tracking URI must answer (any HTTP status) within `timeout` s; else a one-line ValueError, before
    the MLflow client's minutes of retries."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ValueError(f"--mlflow {uri}: no tracking server answers there ({reason})") from None


def mlflow_module() -> Any:
    """The mlflow package, or a one-line ValueError saying how to install it."""
    try:
        import mlflow
    except ImportError:
        raise ValueError(f"--mlflow needs the mlflow package ({MLFLOW_INSTALL})") from None
    return mlflow


class Tracker:
    """Per-epoch scalars to TensorBoard (`out/events.out.tfevents.*`) and, with an MLflow URI, to an MLflow run."""

    def __init__(self, out: str | Path, params: Mapping[str, Any], tensorboard: bool = True,
                 mlflow_uri: str | None = None, run_name: str | None = None, tags: Mapping[str, str] | None = None):
        self.out = Path(out)
        self.tb = None
        self.ml = None
        self._ml_run = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.out.mkdir(parents=True, exist_ok=True)
            self.tb = SummaryWriter(log_dir=str(self.out), flush_secs=30)
        if mlflow_uri:
            self._start_mlflow(mlflow_uri, params, run_name or self.out.name, dict(tags or {}))

    def _start_mlflow(self, uri: str, params: Mapping[str, Any], name: str, tags: dict[str, str]) -> None:
        mlflow = mlflow_module()
        check_reachable(uri)
        for k, v in MLFLOW_HTTP.items():  # a server that dies mid-run costs seconds, not minutes of retries
            os.environ.setdefault(k, v)
        try:
            client = mlflow.MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(MLFLOW_EXPERIMENT)
            run = client.create_run(exp_id, run_name=name, tags={"affcli.run_dir": str(self.out.resolve()), **tags})
            items = list(flat_params(params).items())
            for i in range(0, len(items), 100):
                client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in items[i:i + 100]])
        except Exception as e:  # unreachable server, bad URI: refused before any training
            raise ValueError(f"--mlflow {uri}: cannot start a run there ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]})") from None
        self.ml, self._ml_run = client, run.info.run_id

    @property
    def mlflow_run_id(self) -> str | None:
        """The MLflow run id (None without --mlflow)."""
        return self._ml_run

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Log the finite numbers of `scalars` (nested dicts flattened to 'a/b') at `step`."""
        values = flat_numbers(scalars)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.ml is not None and values:
            self._ml_call(lambda: self.ml.log_batch(self._ml_run, metrics=[
                _metric(k.replace("/", "."), v, step) for k, v in values.items()]))

    def _ml_call(self, fn) -> None:
        try:
            fn()
        except Exception as e:  # the run goes on; the run folder is the record
            warn(f"--mlflow: logging failed ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
                 f"the run folder {self.out} keeps everything")
            self.ml = None

    def close(self, final: Mapping[str, Any] | None = None, status: str = "FINISHED", artifacts: bool = True) -> None:
        """Flush TensorBoard; log the final metrics and the run folder as artifacts and end the MLflow run."""
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
        if self.ml is not None:
            if final:
                values = flat_numbers(final)
                self._ml_call(lambda: self.ml.log_batch(self._ml_run, metrics=[
                    _metric("final." + k.replace("/", "."), v, 0) for k, v in values.items()]))
            if artifacts and self.ml is not None:
                self._ml_call(lambda: self.ml.log_artifacts(self._ml_run, str(self.out)))
            if self.ml is not None:
                self._ml_call(lambda: self.ml.set_terminated(self._ml_run, status))
        self.ml = None


def _metric(key: str, value: float, step: int) -> Any:
    import time

    from mlflow.entities import Metric

    return Metric(key, value, int(time.time() * 1000), step)
