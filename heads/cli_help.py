"""Help strings for the heads commands (`--temporal`, `--fusion`, `--loss`, `--task`), listed from the registries
without importing the parts (common.registry_help reads their source while they are not loaded)."""
from __future__ import annotations

from affcli.common.registry_help import listing

TEMPORAL_SOURCE = ("affcli.heads.temporal", "TEMPORAL")
FUSION_SOURCE = ("affcli.heads.fusion", "FUSION")
LOSS_SOURCE = ("affcli.heads.losses", "LOSSES")
TASK_SOURCE = ("affcli.heads.tasks", "TASKS")


def temporal_help() -> str:
    """--temporal's help: the syntax and every registered temporal head with its options."""
    return "Temporal head, e.g. tcn or 'tcn(levels=6, channels=512, causal=true)'. Registered: " + listing(*TEMPORAL_SOURCE)


def fusion_help() -> str:
    """--fusion's help: the syntax and every registered fusion with its options."""
    return ("Fusion (auto = none for one modality, else concat), e.g. xattn or none:visual. Registered: "
            + listing(*FUSION_SOURCE))


def loss_help() -> str:
    """--loss's help: the weighted-sum syntax and every registered loss with its options."""
    return ("Loss: a weighted sum such as 'ce(weights=auto)+0.1*text-contrastive' or 'ccc+0.2*soft-prompt(sigma=0.45)'; "
            "auto = task default. Registered: " + listing(*LOSS_SOURCE))


def task_help() -> str:
    """--task's help: every registered task."""
    return "Task. Registered: " + listing(*TASK_SOURCE, with_options=False)
