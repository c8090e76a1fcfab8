"""openSMILE acoustic feature sets (eGeMAPS, ComParE, ...) through the `opensmile` package: real, deterministic
signal processing that works offline, summarised over each video frame's audio window.

Spec: `opensmile:<set>` with a set the package names (`eGeMAPSv02`, `ComParE_2016`, `GeMAPSv01b`, `emobase`,
`IS09` ... `IS13`). Options:
- `summary="meanstd"` (default): the set's low-level descriptors (LLDs, openSMILE's own 10 ms hop) summarised by
  their mean and standard deviation over `window` seconds around each step (trailing under `causal`); descriptors
  openSMILE marks `nz` (F0, jitter, shimmer, HNR, formants: zero where unvoiced) are summarised over their non-zero
  frames, as the set's own functionals do. Width 2 x LLDs (eGeMAPSv02: 50).
- `summary="functionals"`: the set's own functionals (eGeMAPSv02: 88, ComParE_2016: 6373) over sliding windows of
  `window` s every `hop` s; only where a whole window fits in the audio.
Range: the cache stores float16, so a column whose peak over loud probe signals (x4 margin) would not fit is
multiplied by a power of ten, recorded in the fingerprint (`scaled`; with meanstd, per descriptor): ComParE's
spectral variance (Hz^2) is kept in units of 1000 Hz^2, every eGeMAPS descriptor keeps its unit. A value that still
overflows (an unbounded functional on extreme audio) fails its video in one line (the cache refuses inf).
Alignment: a step is the LLD frame (or functional window) it summarises, centred where it is; under `causal` a step
exists only once every LLD it uses is final, i.e. `lookahead` after the LLD frame's start (measured once per set by
perturbing a probe signal, rounded up with one hop of margin), so a frame's feature uses no later audio.
"""
from __future__ import annotations

import functools
import hashlib
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affcli.pipeline.backbones.base import AudioBackbone, BackboneError, Steps
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.spec import spec_name

SUMMARIES = ("meanstd", "functionals")
HOP_S = 0.01
PROBE_S = 3.0
F16_MAX = 65504.0
RANGE_MARGIN = 4.0


def feature_sets() -> list[str]:
    """The feature sets the installed opensmile package names (deprecated aliases left out)."""
    import opensmile

    return [n for n in opensmile.FeatureSet.__members__ if n not in ("GeMAPS", "eGeMAPS")]


def _seconds(index: Any, level: int) -> np.ndarray:
    return np.asarray(index.get_level_values(level).total_seconds(), np.float64)


def _lld(smile: Any, wav: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LLDs float32 [T, D] with non-finite values as 0, frame starts [T] s, frame ends [T] s) of a mono signal."""
    df = _process(smile, wav, sr)
    x = np.nan_to_num(df.to_numpy(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return x, _seconds(df.index, 0), _seconds(df.index, 1)


def _process(smile: Any, wav: np.ndarray, sr: int) -> Any:
    """openSMILE's DataFrame for a signal; its 'segment too short' warning is dropped (such rows are removed or
    become invalid frames by the caller)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Segment too short")
        return smile.process_signal(np.asarray(wav, np.float32), sr)


@functools.cache
def measured_lookahead(feature_set: str, sr: int = 16000) -> float:
    """How far past an LLD frame's start its values may depend on the audio (s): perturb the end of a probe signal
    from a few cut points, take the earliest changed frame, round up to the hop and add one hop of margin."""
    import opensmile

    smile = opensmile.Smile(feature_set=feature_set, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    rng = np.random.default_rng(0)
    t = np.arange(int(PROBE_S * sr)) / sr
    base = (0.2 * np.sin(2 * np.pi * (150 + 100 * t) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    v0, starts, _ = _lld(smile, base, sr)
    worst = 0.0
    for cut in (0.8, 1.234, 1.5, 2.0):
        k = int(cut * sr)
        x = base.copy()
        x[k:] = 0.3 * rng.standard_normal(len(x) - k)
        v1, _, _ = _lld(smile, x, sr)
        n = min(len(v0), len(v1))
        changed = np.flatnonzero(~np.isclose(v0[:n], v1[:n]).all(1))
        if len(changed):
            worst = max(worst, k / sr - starts[changed[0]])
    return round((math.ceil(worst / HOP_S - 1e-6) + 1) * HOP_S, 6)


def probe_signals(sr: int) -> list[np.ndarray]:
    """Loud probe signals for the range check: full-scale white noise, a pure tone, a noisy chirp (3 s each)."""
    rng = np.random.default_rng(1)
    t = np.arange(int(PROBE_S * sr)) / sr
    return [rng.uniform(-1, 1, len(t)).astype(np.float32), (0.9 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32),
            (0.5 * np.sin(2 * np.pi * (100 + 650 * t) * t) + 0.1 * rng.standard_normal(len(t))).astype(np.float32)]


def range_scales(peaks: np.ndarray) -> np.ndarray:
    """A power of ten per column that keeps RANGE_MARGIN x its probe peak inside float16 (the cache's dtype); 1
    for every column that already fits (frequencies in Hz do; spectral variance, in Hz^2, does not)."""
    need = np.log10(np.maximum(peaks * RANGE_MARGIN, 1.0) / F16_MAX)
    return np.power(10.0, -np.ceil(np.maximum(need, 0.0))).astype(np.float32)


def windowed_meanstd(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, nz: np.ndarray) -> np.ndarray:
    """[S, 2D]: mean and std of rows x[lo_s:hi_s] per step s (cumulative sums, no loop over steps); columns in
    `nz` over their non-zero rows only (0 where a window has none)."""
    x = x.astype(np.float64)
    w = np.where(nz[None, :], x != 0, True).astype(np.float64)
    c1 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x * w, 0)])
    c2 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x * x * w, 0)])
    cn = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(w, 0)])
    n = cn[hi] - cn[lo]
    safe = np.maximum(n, 1)
    mean = np.where(n > 0, (c1[hi] - c1[lo]) / safe, 0.0)
    var = np.where(n > 0, (c2[hi] - c2[lo]) / safe - mean ** 2, 0.0)
    return np.concatenate([mean, np.sqrt(np.maximum(var, 0.0))], 1).astype(np.float32)


def config_sha256() -> str:
    """Hash of every config file of the installed opensmile package (the 'weights' of a DSP feature set)."""
    import opensmile

    root = Path(opensmile.__file__).parent / "core" / "config"
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + b"|")
        h.update(f.read_bytes())
    return h.hexdigest()


def functionals_conf(window: float, hop: float) -> Path:
    """A frame-mode include for openSMILE's functionals: windows of `window` s every `hop` s (written once)."""
    from affcli.pipeline.wheel_weights import cache_dir

    path = cache_dir("opensmile") / f"frame_mode_{window:g}_{hop:g}.conf.inc"
    text = f"frameMode = fixed\nframeSize = {window:g}\nframeStep = {hop:g}\nframeCenterSpecial = left\n"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{id(text)}")
        tmp.write_text(text)
        tmp.replace(path)
    return path


@BACKBONES.register("opensmile", modality="audio", example="opensmile:eGeMAPSv02", offline=True,
                    help="openSMILE feature sets (eGeMAPSv02, ComParE_2016, ...): LLD mean/std over a window per "
                         "frame, or the set's functionals; offline, deterministic")
class OpenSmileBackbone(AudioBackbone):
    """openSMILE LLDs at 10 ms, summarised per step (mean/std over `window`), or functionals over sliding windows."""

    library = "opensmile"

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0, summary: str = "meanstd",
                 window: float = 1.0, hop: float = 0.1):
        super().__init__(spec, device, seed)
        try:
            import opensmile
        except ImportError as e:
            raise BackboneError(spec, f"the opensmile package is not installed ({e}); pip install opensmile") from None
        name = spec_name(spec)
        known = feature_sets()
        if name not in known:
            raise BackboneError(spec, f"unknown openSMILE feature set {name!r}; known: {', '.join(known)}")
        if summary not in SUMMARIES:
            raise BackboneError(spec, f"summary must be one of {', '.join(SUMMARIES)}, not {summary!r}")
        if not (float(window) >= 2 * HOP_S and float(hop) >= HOP_S):
            raise BackboneError(spec, f"window must be >= {2 * HOP_S} s and hop >= {HOP_S} s "
                                      f"(got window={window}, hop={hop})")
        self.feature_set, self.summary = name, summary
        self.window_s, self.hop_s = float(window), float(hop)
        fs = opensmile.FeatureSet[name]
        self.lld = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        self.lld_names = list(self.lld.feature_names)
        self.nz = np.array([n.endswith("nz") for n in self.lld_names])
        self.lookahead_s = measured_lookahead(name, self.sample_rate)
        if summary == "functionals":
            conf = functionals_conf(self.window_s, self.hop_s)
            self.func = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals,
                                        options={"frameModeFunctionalsConf": str(conf)})
            self.names = list(self.func.feature_names)
        else:
            self.func = None
            self.names = [f"{n}_{s}" for s in ("mean", "std") for n in self.lld_names]
        self.dim = len(self.names)
        self._module = torch.nn.Module()
        self._config_sha = config_sha256()
        self.scale = np.ones(self.dim, np.float32)
        peaks = np.max([np.abs(self._steps(w, False).feats).max(0, initial=0.0) for w in probe_signals(self.sample_rate)],
                       0)
        self.scale = range_scales(peaks)
        if summary == "meanstd":  # one unit per descriptor: its mean and std columns share the smaller scale
            half = self.dim // 2
            both = np.minimum(self.scale[:half], self.scale[half:])
            self.scale = np.concatenate([both, both])

    @property
    def module(self) -> torch.nn.Module:
        return self._module

    def weights_sha256(self) -> str:
        return self._config_sha

    def preprocessing(self) -> dict[str, Any]:
        pre = {"sample_rate": self.sample_rate, "feature_set": self.feature_set, "summary": self.summary,
               "window_s": self.window_s, "lld_hop_s": HOP_S, "lookahead_s": self.lookahead_s,
               "descriptors": self.lld_names, "nz_over_voiced": True}
        if self.summary == "functionals":
            pre.update(hop_s=self.hop_s, descriptors=len(self.names))
        pre["scaled"] = {n: float(f) for n, f in zip(self.names, self.scale) if f != 1}
        return pre

    def steps(self, wav: np.ndarray, causal: bool) -> Steps:
        """The summarised steps, each column times its range scale (a power of ten; 1 for almost all)."""
        st = self._steps(wav, causal)
        return Steps(st.feats * self.scale, st.centre, st.end)

    def _steps(self, wav: np.ndarray, causal: bool) -> Steps:
        sr = self.sample_rate
        if self.func is not None:
            df = _process(self.func, wav, sr)
            x = np.nan_to_num(df.to_numpy(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            start, end = _seconds(df.index, 0), _seconds(df.index, 1)
            full = (end - start) >= self.window_s - HOP_S / 2
            x, start, end = x[full], start[full], end[full]
            return Steps(x, (start + end) / 2, end + self.lookahead_s)
        x, start, stop = _lld(self.lld, wav, sr)
        if causal:
            ready = start + self.lookahead_s
            lo = np.searchsorted(ready, ready - self.window_s, side="right")
            hi = np.arange(1, len(x) + 1)
            return Steps(windowed_meanstd(x, lo, hi, self.nz), ready, ready)
        centre = (start + stop) / 2
        lo = np.searchsorted(centre, centre - self.window_s / 2, side="left")
        hi = np.searchsorted(centre, centre + self.window_s / 2, side="right")
        return Steps(windowed_meanstd(x, lo, hi, self.nz), centre, start + self.lookahead_s)
