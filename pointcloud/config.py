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
    hausdorff: float = option(0.0, help="Weight of the soft Hausdorff loss (ours): mean of the worst 2% squared "
                                        "nearest-neighbour distances, both directions.")
    keep_weight: float = option(1.0, help="Weight of the keep head's cross-entropy (models built with "
                                          "--opt keep_score=true: is each output within half its parent's spacing of "
                                          "the ground truth?); the merge drops the outputs it doubts.")
    augment: bool = option(True, help="Random rotation, scaling and jitter of each batch.")
    jitter: float = option(0.01, help="Sigma of the Gaussian jitter on augmented inputs (clipped at 3 sigma; patch "
                                      "units). 0: clean inputs, like Poisson-disk test clouds.")
    inputs: str = option("h5", help="h5: the file's sparse patches; fps: FPS of each gt patch (uniform, like "
                                    "Poisson-disk test inputs), redrawn per batch.")
    val_every: int = option(0, help="Hold out every Nth training shape (by the file's mesh_index; the same shapes for "
                                    "every seed) and log its Chamfer per epoch as val_cd (0: no split).")
    max_minutes: float | None = option(None, help="Stop (and checkpoint) after this long.", shown="no limit")
    max_steps: int | None = option(None, help="Stop (and checkpoint) after this many optimisation steps in all "
                                              "(equal work for runs compared on a busy machine).", shown="no limit")
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
        newer = ("hausdorff", "val_every", "jitter", "keep_weight")  # options newer than some runs: only when changed
        added = {f.name: f.default for f in dataclasses.fields(self) if f.name in newer}
        return {k: d[k] for k in (*keep, *added) if k not in added or d[k] != added[k]}
