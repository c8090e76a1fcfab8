"""Adding a task is one record: a throwaway 3-class task registered here reads its own label files, trains through
the normal trainer with its default loss, writes its own submission format and is scored by its own scorer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from affcli.heads.data.labels import load_labels
from affcli.heads.infer.predict import predict_run
from affcli.heads.infer.score_files import score_predictions
from affcli.heads.tasks import TASKS, LabelFiles, Output, Submission, Task, class_scorer, get_task, register_task
from affcli.heads.train.trainer import RunConfig, train_run
from affcli.synthetic.features import make_synthetic

torch.set_num_threads(1)
BINS = ("Low", "Mid", "High")


def _pose3(loss: str = "ce") -> Task:
    """A task that exists only for these tests: 3 classes, per-video txt files under POSE_Challenge."""
    return Task("pose3", "3 head-pose bins", (Output("pose", 3, "class", names=BINS),),
                LabelFiles("per-video", ("POSE_Challenge",)), "p_pose", class_scorer("pose", 3), loss,
                Submission(",".join(BINS)))


@pytest.fixture
def pose3():
    task = register_task(_pose3())
    yield task
    TASKS.unregister("pose3")


def _write_pose_labels(expr_root, out_root) -> None:
    """Per-video pose files derived from the synthetic EXPR labels (class % 3, -1 kept), so features carry the signal."""
    for split, folder in (("train", "Train_Set"), ("val", "Validation_Set")):
        df = load_labels(expr_root, "expr", split)
        for (video,), part in df.partition_by("video", as_dict=True).items():
            y = part["expr"].to_numpy()
            d = out_root / "POSE_Challenge" / folder
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{video}.txt").write_text(",".join(BINS) + "\n" + "\n".join(map(str, np.where(y < 0, -1, y % 3))) + "\n")


def test_a_registered_task_record_trains_predicts_and_scores(tmp_path, pose3) -> None:
    cache, expr_labels = make_synthetic(tmp_path, n_videos=6, n_frames=60, dims=(8, 6))
    labels = tmp_path / "pose_labels"
    _write_pose_labels(expr_labels, labels)
    assert get_task("pose3") is pose3 and "pose3" in TASKS.names()

    cfg = RunConfig.from_dict(dict(task="pose3", cache=str(cache), labels=str(labels), window=8, stride=4,
                                   batch_size=32, d_model=16, head_hidden=[16], epochs=6, lr=3e-3, patience=10,
                                   plots=False, device="cpu", amp=False, out=str(tmp_path / "run")))
    m = train_run(cfg)
    assert set(m["history"][0]["terms"]) == {"ce"}
    assert m["main"] == pytest.approx(m["val"]["p_pose"]) and len(m["val"]["f1_per_class"]) == 3
    assert m["main"] > 0.6

    files = predict_run(tmp_path / "run", cache, tmp_path / "pred", split="val", style="per-video", device="cpu")
    assert files and all(f.read_text().splitlines()[0] == "Low,Mid,High" for f in files)
    s = score_predictions("pose3", tmp_path / "pred", labels / "POSE_Challenge" / "Validation_Set", "val")
    assert s["task"] == "pose3" and s["main"] == pytest.approx(s["p_pose"])
    assert s["main"] == pytest.approx(m["main"], abs=1e-6)


def test_register_builds_the_head_and_unregister_restores_the_table() -> None:
    before = TASKS.names()
    task = register_task(_pose3())
    try:
        head = TASKS.build("pose3", 5, (4,), 0.0)
        assert list(head(torch.zeros(2, 7, 5))) == ["pose"] and head(torch.zeros(2, 7, 5))["pose"].shape == (2, 7, 3)
        with pytest.raises(ValueError, match="registered twice"):
            register_task(_pose3(loss="focal"))
        assert get_task("pose3") is task
    finally:
        TASKS.unregister("pose3")
    assert TASKS.names() == before
