"""Named CLIP prompt sets (class names, VA regions) whose text embeddings are cached once per backbone."""
from __future__ import annotations

import numpy as np

from affcli.common.registry import UnknownNameError
from affcli.common.vocab import EXPR_CLASSES

EXPR8_CLASSES = list(EXPR_CLASSES)
LSD6_CLASSES = list(EXPR_CLASSES[1:7])
"""The six basic expressions (Anger ... Surprise) of LSD, in its label order, as words for prompts."""

VA9_LEVELS = (-0.66, 0.0, 0.66)
VA9_CENTRES: np.ndarray = np.array([(v, a) for v in VA9_LEVELS for a in VA9_LEVELS], np.float32)
"""[9, 2] (valence, arousal) region centres, valence-major: index = 3 * valence_level + arousal_level."""

_VALENCE = {-0.66: "unpleasant", 0.0: "neutral", 0.66: "pleasant"}
_AROUSAL = {-0.66: "calm", 0.0: "moderately alert", 0.66: "highly excited"}
_REGION_WORDS = {
    (-0.66, -0.66): "sad and tired", (-0.66, 0.0): "displeased and annoyed", (-0.66, 0.66): "angry and afraid",
    (0.0, -0.66): "relaxed and sleepy", (0.0, 0.0): "neutral and composed", (0.0, 0.66): "surprised and alert",
    (0.66, -0.66): "content and serene", (0.66, 0.0): "happy and pleased", (0.66, 0.66): "excited and delighted",
}
VA9_TEMPLATES = (
    "A face that looks {words}",
    "A photo of a person whose feeling is {valence} and {arousal}",
    "A face showing {valence} emotion with {arousal} energy",
)


def _va9() -> list[str]:
    out = []
    for v, a in ((v, a) for v in VA9_LEVELS for a in VA9_LEVELS):
        words = _REGION_WORDS[(v, a)]
        out += [t.format(words=words, valence=_VALENCE[v], arousal=_AROUSAL[a]) for t in VA9_TEMPLATES]
    return out


PROMPT_SETS: dict[str, list[str]] = {
    "expr8": [f"A face expressing {c}" for c in EXPR8_CLASSES],
    "va9": _va9(),
    "lsd6": [f"A face expressing {c}" for c in LSD6_CLASSES],
}
"""expr8: 8 EXPR classes in label order; va9: 27 prompts, 3 templates per region in VA9_CENTRES order
(prompt 3*r + k is template k of region r); lsd6: the 6 LSD classes in label order."""


def prompt_set(name: str) -> list[str]:
    """The prompts of a named set (a copy); unknown names raise UnknownNameError listing the valid ones."""
    if name not in PROMPT_SETS:
        raise UnknownNameError("prompt set", name, sorted(PROMPT_SETS))
    return list(PROMPT_SETS[name])
