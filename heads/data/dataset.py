"""Training data held on the device: per-modality feature tensors, dense labels, split membership, text embeddings."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from affcli.cache.table import FeatureTable
from affcli.heads.fusion import group_features


@dataclass
class Data:
    """Features of all videos of all splits, one contiguous tensor per modality on `device`, plus dense labels.

    `splits` maps a split name ('train', 'val', ...) to indices into `videos`; `labels` holds the
    arrays of heads.labels.labels_to_arrays over the same rows; `text` maps prompt-set names to [P, D].
    """

    task: str
    features: list[str]
    videos: list[str]
    starts: np.ndarray
    lengths: np.ndarray
    modalities: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    splits: dict[str, list[int]]
    text: dict[str, torch.Tensor] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")
    info: dict = field(default_factory=dict)

    @property
    def in_dims(self) -> dict[str, int]:
        """Input width per modality."""
        return {m: int(t.shape[1]) for m, t in self.modalities.items()}

    def split_rows(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, lengths, video indices) of a split's videos."""
        if split not in self.splits:
            raise KeyError(f"no split {split!r}; have {', '.join(self.splits)}")
        vi = np.asarray(self.splits[split], dtype=np.int64)
        return self.starts[vi], self.lengths[vi], vi

    def rows_of(self, split: str) -> torch.Tensor:
        """All table rows of a split's videos, in video order."""
        s, n, _ = self.split_rows(split)
        if len(s) == 0:
            return torch.zeros(0, dtype=torch.long)
        return torch.from_numpy(np.concatenate([np.arange(a, a + b) for a, b in zip(s, n)]))

    @staticmethod
    def from_table(table: FeatureTable, labels: dict[str, np.ndarray | torch.Tensor], splits: dict[str, list[str]],
                   task: str, features: list[str] | None = None, text: dict[str, np.ndarray | torch.Tensor] | None = None,
                   device: torch.device | str = "cpu") -> "Data":
        """Group feature sets by the table's modality (concatenated, invalid frames zeroed); move all to `device`.

        A modality's frame is valid only where all of its feature sets are valid.
        """
        device = torch.device(device)
        features = list(features or table.feats)
        for s in features:
            if s not in table.feats:
                raise KeyError(f"feature set {s!r} not in the table; have {', '.join(table.feats)}")
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        mods, valid = {}, {}
        for m, specs in group_features(features, table.modality).items():
            ok = torch.stack([table.valid[s].bool() for s in specs]).all(0)
            x = torch.cat([table.feats[s].to(device=device, dtype=dtype) for s in specs], 1)
            ok = ok.to(device)
            mods[m] = torch.where(ok.unsqueeze(1), torch.nan_to_num(x), torch.zeros((), dtype=dtype, device=device))
            valid[m] = ok
        n = table.n_frames
        labs = {}
        for k, v in labels.items():
            t = torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v
            if t.shape[0] != n:
                raise ValueError(f"labels[{k!r}] has {t.shape[0]} rows, the feature table {n}")
            labs[k] = t.to(device)
        index = {v: i for i, v in enumerate(table.videos)}
        split_idx = {}
        for name, vids in splits.items():
            missing = [v for v in vids if v not in index]
            if missing:
                raise KeyError(f"split {name}: {len(missing)} video(s) not in the feature table: {', '.join(missing[:5])}")
            split_idx[name] = [index[v] for v in vids]
        txt = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)).to(device) for k, v in (text or {}).items()}
        return Data(task, features, list(table.videos), np.asarray(table.starts), np.asarray(table.lengths),
                    mods, valid, labs, split_idx, txt, device)
