"""The one fingerprint builder: what identifies a feature set in the cache, including its modality and width."""
from __future__ import annotations

from typing import Any

MODALITIES = ("visual", "audio")
IDENTITY_FIELDS = ("spec", "weights_sha256", "preprocessing", "dim", "dtype", "alignment", "modality")


def check_modality(modality: Any, where: str) -> str:
    """The modality if it is one the heads can group by; else ValueError naming `where` and the valid ones."""
    if modality not in MODALITIES:
        raise ValueError(f"{where}: modality {modality!r} is not one of {', '.join(MODALITIES)}")
    return str(modality)


def make_fingerprint(spec: str, modality: str, dim: int, weights_sha256: str, preprocessing: dict[str, Any] | None = None,
                     alignment: str | None = None, versions: dict[str, str] | None = None,
                     dtype: str = "float16") -> dict[str, Any]:
    """A feature set's fingerprint: identity fields (spec, weights, preprocessing, dim, dtype, alignment, modality)
    plus the library versions that made it (those only warn when they differ)."""
    if int(dim) <= 0:
        raise ValueError(f"{spec}: feature dim must be positive, not {dim!r}")
    return {"spec": spec, "modality": check_modality(modality, spec), "dim": int(dim),
            "weights_sha256": str(weights_sha256), "preprocessing": dict(preprocessing or {}),
            "alignment": alignment, "dtype": dtype, "versions": dict(versions or {})}


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Identity fields on which two fingerprints disagree (library versions are not identity; a legacy
    fingerprint without a modality takes the new one instead of disagreeing)."""
    return [k for k in IDENTITY_FIELDS if old.get(k) != new.get(k) and not (k == "modality" and old.get(k) is None)]


def missing_modality(path: str, spec: str) -> str:
    """The one-line error for a feature set written before fingerprints carried a modality."""
    return (f"{path}: feature set {spec!r} has no modality in its fingerprint (written before affcli recorded it); "
            f"run `affcli cache set-modality {path} {spec} visual|audio`")
