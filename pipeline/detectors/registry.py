"""The face-detector table: one `@DETECTORS.register("name", landmarks=..., help=...)` per detector module.

Every detector is called as `factory(device, threads, **options)`: `device` is where the frames are, `threads`
the host threads it may use; its options are its further keyword parameters, which the crop fingerprint records
and `CropSettings.read` passes back (pipeline/crop_settings.py). Declared at registration: `landmarks` (whether
it gives the 5 landmarks alignment needs) and `crop` ("face": crops around its boxes, the default; "letterbox":
no detection, whole frames letterboxed).
"""
from __future__ import annotations

from affcli.common.registry import Registry

DETECTORS: Registry = Registry("face detector", supplied=("device", "threads"))
