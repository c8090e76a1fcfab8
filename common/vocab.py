"""Aff-Wild2 / ABAW naming shared by pipeline (prompts, demo data) and heads (labels, scoring): class and AU names,
and the rule that maps a per-subject label id to its video."""
from __future__ import annotations

import re

EXPR_CLASSES: tuple[str, ...] = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
"""The 8 EXPR classes in label order (ABAW1-2 files use the first 7)."""
AU_NAMES: tuple[str, ...] = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
VA_NAMES: tuple[str, ...] = ("valence", "arousal")
LSD_CLASSES: tuple[str, ...] = ("ANGRER", "DISGUST", "FEAR", "HAPPINESS", "SADNESS", "SURPRISE")
"""LSD class folder names as the dataset spells them (sic 'ANGRER'), in label order."""

SIDE_SUFFIX = r"_(left|right)$"
"""Regex of the suffix that marks one subject of a two-person video (`video10_left`); for polars `str.replace`."""
_SIDE = re.compile(SIDE_SUFFIX)


def subject_video(label_id: str) -> str:
    """The video a label id belongs to: `video10_left` / `video10_right` -> `video10`; other ids unchanged."""
    return _SIDE.sub("", label_id)

SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {"train": ("Train_Set", "Training_Set"), "val": ("Validation_Set",)}
"""Split folder names of a challenge folder, every ABAW edition's spellings (the first is what affcli writes)."""
CHALLENGE_FOLDERS: dict[str, tuple[str, ...]] = {
    "expr": ("EXPR_Recognition_Challenge", "EXPR_Classification_Challenge", "EXPR_Set"),
    "va": ("VA_Estimation_Challenge", "VA_Set"),
    "au": ("AU_Detection_Challenge", "AU_Set"),
}
"""Challenge folder names of the per-video label files of each task, every edition's (the first is what affcli writes)."""
