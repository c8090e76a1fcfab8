"""How a feature set's rows are cut from its input, and the one reader and writer of that record.

`CropSettings` names the input kind (decoded video frames, pre-cropped frame folders, still images), the crop size,
the face detector (a DETECTORS name, with its options) and the crop options (align, margin, detect_every, track
IoU), plus the frame rate of frame folders and the augmented views of still images. `fingerprint()` writes the
dict stored under the feature fingerprint's preprocessing["crop"], `read()` turns such a dict back into settings
(the stored format is the one affcli has always written), `face_attrs()` writes the face record's attributes, and
`build_detector()` builds the detector the settings name. Nothing else parses these records or names a detector.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from affcli.pipeline.detectors import DETECTORS

INPUTS = ("video", "frames", "images")
TEMPLATE = "arcface-5pt"
DEFAULT_MARGIN = 0.25
DEFAULT_TRACK_IOU = 0.4
# keys of the crop fingerprint that belong to the settings, not to a detector's options or identity
OWN_KEYS = ("mode", "detector", "align", "template", "size", "margin", "detect_every", "track_iou", "crop", "fps",
            "augment")


def _json(value: Any, what: str) -> Any:
    """`value` as the cache stores it (tuples become lists), refusing what JSON cannot hold."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {value!r} is not a JSON value (it is recorded in the crop fingerprint)") from None


@dataclass(frozen=True)
class CropSettings:
    """The crop of one input kind: `input` video | frames | images, square `size`, face `detector` (+ `options`, the
    registry defaults filled in), `align` (None: on where the detector gives landmarks), `margin`, `detect_every`,
    `track_iou`; `fps` of frame folders and `augment` (the views' fingerprint) of still images."""

    input: str
    size: int
    detector: str = "none"
    options: Mapping[str, Any] = field(default_factory=dict)
    align: bool | None = None
    margin: float = DEFAULT_MARGIN
    detect_every: int = 1
    track_iou: float = DEFAULT_TRACK_IOU
    fps: float | None = None
    augment: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(f"crop input must be one of {', '.join(INPUTS)}, not {self.input!r}")
        DETECTORS.check(self.detector, self.options)
        opts = {**DETECTORS.defaults(self.detector), **self.options}
        clash = sorted((set(opts) | set(self.identity())) & set(OWN_KEYS))
        if clash:
            raise ValueError(f"face detector {self.detector!r}: option or identity {clash[0]!r} clashes with a crop "
                             f"setting of the same name; rename it")
        object.__setattr__(self, "options", {k: _json(v, f"face detector {self.detector!r} option {k}")
                                             for k, v in opts.items()})
        landmarks = self.landmarks
        if self.align is None:
            object.__setattr__(self, "align", landmarks)
        elif self.align and not landmarks:
            having = [n for n in DETECTORS.names() if DETECTORS.meta(n).get("landmarks")]
            raise ValueError(f"extract: --align needs face landmarks, which --face {self.detector} does not give "
                             f"(detectors with landmarks: {', '.join(having) or 'none'})")
        if self.detect_every < 1 or not 0 <= self.track_iou <= 1:
            raise ValueError(f"extract: --detect-every must be >= 1 and the track IoU in [0, 1], "
                             f"not {self.detect_every} / {self.track_iou}")
        if self.margin < 0 or self.size < 1:
            raise ValueError(f"extract: the face margin must be >= 0 and the crop size >= 1, not {self.margin} / "
                             f"{self.size}")

    # ---- what the settings mean ---------------------------------------------------------------------------------
    @property
    def landmarks(self) -> bool:
        """Whether the detector gives the 5 landmarks alignment needs (declared at its registration)."""
        return bool(DETECTORS.meta(self.detector).get("landmarks", False))

    @property
    def method(self) -> str:
        """"pre-cropped" (frame folders: only resized), "letterbox" (whole frames) or "face" (crops around faces)."""
        if self.input == "frames":
            return "pre-cropped"
        return "letterbox" if DETECTORS.meta(self.detector).get("crop", "face") == "letterbox" else "face"

    def identity(self) -> dict[str, Any]:
        """The detector's model / library version (its class's `identity()`; none for a plain factory)."""
        ident = getattr(DETECTORS.get(self.detector), "identity", None)
        return dict(ident()) if callable(ident) else {}

    def build_detector(self, device: Any, threads: int = 1) -> Any:
        """The detector with these options, on `device` (None where nothing is detected)."""
        if self.method != "face":
            return None
        try:
            return DETECTORS.build(self.detector, device, max(1, int(threads)), **self.options)
        except (TypeError, ValueError) as e:  # an option value the detector cannot take: one line naming it
            msg = str(e) if self.detector in str(e) else f"face detector {self.detector!r}: {e}"
            raise ValueError(f"{msg} (options {self.options})") from None

    # ---- writers ------------------------------------------------------------------------------------------------
    def face_attrs(self) -> dict[str, Any] | None:
        """Attributes of the face record (how faces were found and cropped); None where no face is cropped."""
        if self.method != "face":
            return None
        return {"detector": self.detector, "align": bool(self.align), "template": TEMPLATE if self.align else None,
                "size": int(self.size), "margin": None if self.align else float(self.margin),
                "detect_every": int(self.detect_every),
                "track_iou": float(self.track_iou) if self.detect_every > 1 else None}

    def fingerprint(self) -> dict[str, Any]:
        """The crop fingerprint (preprocessing["crop"] of every visual feature set of the run)."""
        method = self.method
        if method == "pre-cropped":
            return {"mode": "pre-cropped", "fps": self.fps, "size": int(self.size)}
        if method == "letterbox":
            fp: dict[str, Any] = {"mode": "whole-image" if self.input == "images" else "whole-frame",
                                  "size": int(self.size)}
        else:
            fp = {"mode": "face", **self.identity(), **self.options, **self.face_attrs(),
                  "crop": "similarity warp to the template" if self.align else "square box crop, zero padded"}
        if self.input == "images":
            fp["augment"] = None if self.augment is None else _json(dict(self.augment), "augment")
        return fp

    # ---- reader -------------------------------------------------------------------------------------------------
    @classmethod
    def read(cls, crop: Mapping[str, Any]) -> CropSettings:
        """The settings a crop fingerprint records (as `fingerprint()` writes it); the detector's options are read
        back by the registry's option names, so nothing here knows a detector. ValueError for a record it cannot
        rebuild, UnknownNameError for a detector that is not registered."""
        mode, size = crop.get("mode"), int(crop.get("size") or 0)
        if mode == "pre-cropped":
            return cls("frames", size, fps=None if crop.get("fps") is None else float(crop["fps"]))
        if mode == "whole-frame":
            return cls("video", size)
        if mode == "whole-image":
            return cls("images", size, augment=crop.get("augment"))
        if mode != "face":
            raise ValueError(f"crop mode {mode!r} is not one affcli writes "
                             f"(pre-cropped, whole-frame, whole-image, face)")
        name = crop.get("detector")
        if name is None:
            raise ValueError("the crop record names no face detector (faces of still images cropped before the "
                             "detector registry); extract those images again into another cache")
        options = {k: crop[k] for k in DETECTORS.options(name) if k in crop}
        every = int(crop.get("detect_every") or 1)
        images = "augment" in crop
        return cls("images" if images else "video", size, name, options, bool(crop.get("align")),
                   DEFAULT_MARGIN if crop.get("margin") is None else float(crop["margin"]), every,
                   DEFAULT_TRACK_IOU if crop.get("track_iou") is None else float(crop["track_iou"]),
                   augment=crop.get("augment") if images else None)
