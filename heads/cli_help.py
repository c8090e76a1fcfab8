"""Help strings for the heads commands, built from the registries so --help lists what is registered."""
from __future__ import annotations

from affcli.common.registry import Registry


def options_help(reg: Registry, name: str) -> str:
    """'a=1, b=None, c' from the part's signature (an option without a default is required)."""
    return ", ".join(k if p.default is p.empty else f"{k}={p.default!r}" for k, p in reg.options(name).items())


def names_help(reg: Registry, with_options: bool = True) -> str:
    """'name(option=default, ...): help; ...' for every registered name."""
    parts = []
    for n in reg.names():
        meta, opts = reg.meta(n), options_help(reg, n) if with_options else ""
        parts.append(n + (f"({opts})" if opts else "") + (f": {meta['help']}" if meta.get("help") else ""))
    return "; ".join(parts)


def temporal_help() -> str:
    from affcli.heads.temporal import TEMPORAL

    return "Temporal head, e.g. tcn or 'tcn(levels=6, channels=512, causal=true)'. Registered: " + names_help(TEMPORAL)


def fusion_help() -> str:
    from affcli.heads.fusion import FUSION

    return "Fusion (auto = none for one modality, else concat), e.g. xattn or none:visual. Registered: " + names_help(FUSION)


def loss_help() -> str:
    from affcli.heads.losses import LOSSES

    return ("Loss: a weighted sum such as 'ce(weights=auto)+0.1*text-contrastive' or 'ccc+0.2*soft-prompt(sigma=0.45)'; "
            "auto = task default. Registered: " + names_help(LOSSES))


def task_help() -> str:
    from affcli.heads.tasks import TASK_HEADS

    return "Task. Registered: " + names_help(TASK_HEADS, with_options=False)
