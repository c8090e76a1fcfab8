"""TrainConfig: one point-cloud training run (its fields are `affcli pc train`'s options); imports no torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affcli.common.cli_options import option


@dataclass
class TrainConfig:
    """One training run; the paper's defaults (batch 64, 100 epochs, Adam lr 1e-4)."""

    data: str = option(help="PU-GAN-format HDF5 (poisson_256 / poisson_1024).")
    out: str = option(help="Run folder (resumes when it holds a checkpoint of the same run).")
    model: str = option("pu-mfa", help="pu-mfa | pu-net")
    ratio: int = option(4, help="Upsampling ratio the model is built for.")
    epochs: int = option(100, help="Epochs to train (a resumed run continues up to this many).")
    batch_size: int = option(64, help="Patches per step.")
    lr: float = option(1e-4, help="Adam learning rate.")
    device: str = option("auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    max_patches: int | None = option(None, help="Use only the first N patches.", shown="all")
    seed: int = option(0, help="Seed.")
    repulsion: float = option(0.0, help="Weight of the PU-Net repulsion loss.")
    uniform: float = option(0.0, help="Weight of the nearest-neighbour uniformity loss.")
    augment: bool = option(True, help="Random rotation, scaling and jitter of each batch.")
    inputs: str = option("h5", help="h5: the file's sparse patches; fps: FPS of each gt patch (uniform, like "
                                    "Poisson-disk test inputs), redrawn per batch.")
    max_minutes: float | None = option(None, help="Stop (and checkpoint) after this long.", shown="no limit")
    input_key: str = option("poisson_256", help="HDF5 dataset of the sparse input patches.")
    gt_key: str = option("poisson_1024", help="HDF5 dataset of the dense ground-truth patches.")
    model_options: dict[str, Any] = option({}, flag="--opt", help="Model option, e.g. fusion=concat.")

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the original (not epochs, device or time budget)."""
        keep = (
            "data",
            "model",
            "ratio",
            "batch_size",
            "lr",
            "max_patches",
            "seed",
            "repulsion",
            "uniform",
            "augment",
            "input_key",
            "gt_key",
            "model_options",
        )
        d = dataclasses.asdict(self)
        d["data"] = str(Path(self.data).resolve())
        return {k: d[k] for k in keep}
