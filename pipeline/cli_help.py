"""Help strings for `extract` and `prompts` (`--backbone`, `--face`, prompt sets), listed from the registries
without importing the parts (common.registry_help reads their source while they are not loaded)."""
from __future__ import annotations

from affcli.common.registry_help import listing

BACKBONE_SOURCE = ("affcli.pipeline.backbones", "BACKBONES")
DETECTOR_SOURCE = ("affcli.pipeline.detectors", "DETECTORS")
BACKBONE_FIELDS = ("modality", "example")
DETECTOR_FIELDS = ("landmarks",)


def backbone_help() -> str:
    """--backbone's help: the spec syntax and every registered kind with its modality and an example spec."""
    return ("Backbone spec kind:name, repeatable, with the kind's options at the end in quotes, e.g. "
            "'wavlm:microsoft/wavlm-large(layer=6)' (the whole string names the feature set; kind:tiny for offline "
            "tests). Registered, with their options: "
            + listing(*BACKBONE_SOURCE, with_options=True, fields=BACKBONE_FIELDS))


def face_help() -> str:
    """--face's help: how the crop follows the detector, and every registered detector."""
    return ("Face detector. A detector with landmarks gives crops aligned to the ArcFace template (--align, on by "
            "default there), one without gives square box crops with --face-margin; none letterboxes whole frames. "
            "Registered, with their options (--face-option): "
            + listing(*DETECTOR_SOURCE, with_options=True, fields=DETECTOR_FIELDS))


def prompt_sets_help() -> str:
    """The named prompt sets."""
    from affcli.pipeline.prompts import PROMPT_SETS

    return ", ".join(sorted(PROMPT_SETS))
