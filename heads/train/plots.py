"""Run plots with matplotlib Agg: training curves, EXPR confusion matrix, predicted-vs-true VA density."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves(history: list[dict], path: Path) -> Path:
    """Train loss and val main metric per epoch."""
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(ep, [h["train_loss"] for h in history], marker="o")
    ax[0].set(xlabel="epoch", ylabel="train loss")
    ax[1].plot(ep, [h["val_main"] for h in history], marker="o", color="C1")
    ax[1].set(xlabel="epoch", ylabel="val main metric")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix over labelled frames."""
    plt = _plt()
    n = len(classes)
    cm = np.zeros((n, n))
    np.add.at(cm, (y_true, y_pred), 1)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def va_density(pred: np.ndarray, true: np.ndarray, path: Path) -> Path:
    """2-D histograms of predicted vs true valence and arousal."""
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(8, 4))
    for i, name in enumerate(("valence", "arousal")):
        ax[i].hist2d(true[:, i], pred[:, i], bins=40, range=[[-1, 1], [-1, 1]], cmap="viridis")
        ax[i].plot([-1, 1], [-1, 1], "w--", lw=0.8)
        ax[i].set(xlabel=f"true {name}", ylabel=f"predicted {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
