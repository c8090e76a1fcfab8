"""Label readers (EXPR/VA/AU per-video txt, s-Aff-Wild2 MTL file, LSD folders), alignment to cached frames, arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from affcli.common.vocab import AU_NAMES, EXPR_CLASSES
from affcli.heads.errors import LabelError
from affcli.heads.data.labels import align_to_frames, check_disjoint_splits, find_task_dirs, label_files, labels_to_arrays, \
    load_labels, read_label_file

HEADER = {"expr": ",".join(EXPR_CLASSES), "va": "valence,arousal", "au": ",".join(AU_NAMES)}


def write_txt(path: Path, task: str, rows: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(",".join(str(v) for v in np.atleast_1d(r)) for r in rows)
    path.write_text(f"{HEADER[task]}\n{body}\n")
    return path


def test_read_expr_va_au_files(tmp_path: Path) -> None:
    e = write_txt(tmp_path / "e.txt", "expr", np.array([0, 7, -1, 3]))
    v = write_txt(tmp_path / "v.txt", "va", np.array([[0.5, -0.25], [-5, -5], [1, -1]]))
    a = write_txt(tmp_path / "a.txt", "au", np.array([[1] * 12, [-1] * 12]))
    ex = read_label_file(e, "expr")
    assert ex.dtype == np.int64 and ex.tolist() == [0, 7, -1, 3]
    va = read_label_file(v, "va")
    assert va.dtype == np.float32 and va.shape == (3, 2) and va[0].tolist() == [0.5, -0.25]
    au = read_label_file(a, "au")
    assert au.shape == (2, 12) and au[1].tolist() == [-1] * 12


@pytest.mark.parametrize("body, line, what", [
    ("0\n1,2\n", "line 3", "expected 1"),
    ("0\nnan\n", "line 3", "not a finite number"),
    ("0\nabc\n", "line 3", "not a finite number"),
    ("0\n1\n9\n", "line 4", "out of range"),
    ("0\n1.5\n", "line 3", "out of range"),
])
def test_bad_expr_rows_name_file_and_line(tmp_path: Path, body: str, line: str, what: str) -> None:
    p = tmp_path / "bad.txt"
    p.write_text(HEADER["expr"] + "\n" + body)
    with pytest.raises(LabelError) as e:
        read_label_file(p, "expr")
    assert str(e.value).startswith(f"{p}: {line}") and what in str(e.value)


def test_seven_class_header_and_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "old.txt"
    p.write_text(",".join(EXPR_CLASSES[:7]) + "\n0\n6\n")
    assert read_label_file(p, "expr").tolist() == [0, 6]
    p.write_text(",".join(EXPR_CLASSES[:7]) + "\n7\n")
    with pytest.raises(LabelError, match="line 2: .*0..6"):
        read_label_file(p, "expr")
    q = tmp_path / "empty.txt"
    q.write_text(HEADER["au"] + "\n")
    assert read_label_file(q, "au").shape == (0, 12)


def test_bad_header_and_va_range(tmp_path: Path) -> None:
    p = tmp_path / "h.txt"
    p.write_text("valence,arousal\n0.1,0.2\n")
    with pytest.raises(LabelError, match="line 1: header"):
        read_label_file(p, "au")
    q = write_txt(tmp_path / "v.txt", "va", np.array([[0.1, 0.2], [1.5, 0.0]]))
    with pytest.raises(LabelError, match=r"line 3: .*out of range"):
        read_label_file(q, "va")


@pytest.mark.parametrize("folder", ["EXPR_Classification_Challenge", "EXPR_Recognition_Challenge", "."])
def test_find_task_dirs_editions(tmp_path: Path, folder: str) -> None:
    root = tmp_path / folder
    write_txt(root / "Train_Set" / "x.txt", "expr", np.array([1]))
    write_txt(root / "Validation_Set" / "y.txt", "expr", np.array([1]))
    dirs = find_task_dirs(tmp_path, "expr")
    assert dirs == {"train": root / "Train_Set", "val": root / "Validation_Set"}
    assert set(label_files(tmp_path, "expr", "val")) == {"y"}


@pytest.mark.parametrize("shape", ["abaw-root", "challenge-folder", "train-set-parent", "flat"])
def test_label_root_shapes(tmp_path: Path, shape: str) -> None:
    ch = tmp_path / ("my_expr_labels" if shape == "train-set-parent" else "EXPR_Classification_Challenge")
    write_txt(ch / "Train_Set" / "a.txt", "expr", np.array([1, 2]))
    write_txt(ch / "Validation_Set" / "b.txt", "expr", np.array([3, 4, 5]))
    root = {"abaw-root": tmp_path, "challenge-folder": ch, "train-set-parent": ch,
            "flat": ch / "Validation_Set"}[shape]
    val = load_labels(root, "expr", "val")
    assert val["video"].unique().to_list() == ["b"] and val["expr"].to_list() == [3, 4, 5]
    if shape == "flat":
        assert find_task_dirs(root, "expr") == {"train": root, "val": root}
        assert load_labels(root, "expr", "train")["expr"].to_list() == [3, 4, 5]
    else:
        assert load_labels(root, "expr", "train")["expr"].to_list() == [1, 2]


def test_a_flat_folder_cannot_serve_as_train_and_val_at_once(tmp_path: Path) -> None:
    ch = tmp_path / "EXPR_Classification_Challenge"
    write_txt(ch / "Train_Set" / "a.txt", "expr", np.array([1, 2]))
    write_txt(ch / "Validation_Set" / "b.txt", "expr", np.array([3]))
    check_disjoint_splits(tmp_path, {s: load_labels(tmp_path, "expr", s) for s in ("train", "val")})
    flat = ch / "Train_Set"
    with pytest.raises(LabelError, match=r"Train_Set: 1 ids are labelled in both the train and the val split"):
        check_disjoint_splits(flat, {s: load_labels(flat, "expr", s) for s in ("train", "val")})


def test_unknown_label_folder_shape_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "junk" / "sub").mkdir(parents=True)
    (tmp_path / "junk" / "notes.md").write_text("x")
    with pytest.raises(LabelError) as e:
        load_labels(tmp_path / "junk", "au", "train")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'junk'}: no au annotations") and "\n" not in msg
    assert "AU_Detection_Challenge" in msg and "Train_Set/Validation_Set parent" in msg and "flat folder" in msg
    with pytest.raises(LabelError, match="label root is not a folder"):
        load_labels(tmp_path / "missing", "au", "train")


def test_lsd_root_may_be_the_split_folder(tmp_path: Path) -> None:
    for cls, name in (("ANGER", "1"), ("FEAR", "2")):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / f"{name}.png").write_bytes(b"")
    df = load_labels(tmp_path, "lsd", "train")
    assert dict(zip(df["video"].to_list(), df["lsd"].to_list())) == {"1": 0, "2": 2}


def test_missing_task_folder(tmp_path: Path) -> None:
    write_txt(tmp_path / "EXPR_Recognition_Challenge" / "Train_Set" / "x.txt", "expr", np.array([1]))
    with pytest.raises(LabelError, match="no va annotations"):
        find_task_dirs(tmp_path, "va")


def test_load_labels_per_video_left_right_and_masks(tmp_path: Path) -> None:
    d = tmp_path / "VA_Estimation_Challenge" / "Validation_Set"
    write_txt(d / "12-24-1920x1080_left.txt", "va", np.array([[0.1, 0.2], [-5, -5], [0.3, 0.4]]))
    write_txt(d / "video45_1.txt", "va", np.array([[0.5, 0.5]]))
    df = load_labels(tmp_path, "va", "val")
    assert df.columns[:5] == ["video", "feature_video", "frame", "valence", "arousal"]
    left = df.filter(pl.col("video") == "12-24-1920x1080_left")
    assert left["feature_video"].unique().to_list() == ["12-24-1920x1080"]
    assert left["frame"].to_list() == [0, 1, 2] and left["mask_va"].to_list() == [True, False, True]
    assert df.filter(pl.col("video") == "video45_1")["feature_video"].to_list() == ["video45_1"]

    a = tmp_path / "AU_Detection_Challenge" / "Train_Set"
    write_txt(a / "v.txt", "au", np.array([[0] * 12, [-1] * 12, [1] * 12]))
    au = load_labels(tmp_path, "au", "train")
    assert au["mask_au"].to_list() == [True, False, True] and au.select(AU_NAMES).row(2) == (1,) * 12


def test_mtl_single_file(tmp_path: Path) -> None:
    d = tmp_path / "MTL_Challenge"
    d.mkdir()
    aus = ",".join(["1"] * 12)
    (d / "validation_set_annotations.txt").write_text(
        "image,valence,arousal,expression,aus\n"
        f"vid_right/00001.jpg,0.1,0.2,3,{aus}\n"
        f"vid_right/00006.jpg,-5,-5,-1,{aus}\n"
        f"other/00011.jpg,0.3,-0.3,5,{','.join(['-1'] * 12)}\n")
    df = load_labels(tmp_path, "mtl", "val")
    assert df["frame"].to_list() == [0, 5, 10]
    assert df["feature_video"].to_list() == ["vid", "vid", "other"]
    assert df["mask_va"].to_list() == [True, False, True]
    assert df["mask_expr"].to_list() == [True, False, True]
    assert df["mask_au"].to_list() == [True, True, False]
    (d / "training_set_annotations.txt").write_text(f"image,x\nvid/00001.jpg,0.1,0.2,3,{aus}\nvid/0002.jpg,0.1\n")
    with pytest.raises(LabelError, match=r"training_set_annotations.txt: line 3: expected 16"):
        load_labels(tmp_path, "mtl", "train")


def test_lsd_folders(tmp_path: Path) -> None:
    root = tmp_path / "validation_set_real_images"
    for cls, names in (("ANGRER", ["1", "2"]), ("SURPRISE", ["3"]), ("FEAR", ["4"])):
        (root / cls).mkdir(parents=True)
        for n in names:
            (root / cls / f"{n}.jpg").write_bytes(b"")
    df = load_labels(tmp_path, "lsd", "val")
    got = dict(zip(df["video"].to_list(), df["lsd"].to_list()))
    assert got == {"1": 0, "2": 0, "3": 5, "4": 2} and set(df["frame"].to_list()) == {0}
    (root / "BORED").mkdir()
    with pytest.raises(LabelError, match="BORED: unknown LSD class"):
        load_labels(tmp_path, "lsd", "val")


def _expr_root(tmp_path: Path, rows: dict[str, list[int]]) -> Path:
    for v, r in rows.items():
        write_txt(tmp_path / "EXPR_Classification_Challenge" / "Train_Set" / f"{v}.txt", "expr", np.array(r))
    return tmp_path


def test_align_pads_and_truncates_within_tolerance(tmp_path: Path) -> None:
    df = load_labels(_expr_root(tmp_path, {"a_left": [1, 2, 3, 4], "b": [5, 6, 7, 0, 1]}), "expr", "train")
    out = align_to_frames(df, {"a": 6, "b": 3}, tolerance=2)
    a = out.filter(pl.col("video") == "a_left")
    assert a["frame"].to_list() == list(range(6)) and a["expr"].to_list() == [1, 2, 3, 4, -1, -1]
    assert a["mask_expr"].to_list() == [True] * 4 + [False] * 2 and set(a["feature_video"]) == {"a"}
    assert out.filter(pl.col("video") == "b")["expr"].to_list() == [5, 6, 7]


def test_align_refuses_beyond_tolerance_and_unknown(tmp_path: Path) -> None:
    df = load_labels(_expr_root(tmp_path, {"a": [1] * 10}), "expr", "train")
    with pytest.raises(LabelError) as e:
        align_to_frames(df, {"a": 4}, tolerance=3)
    msg = str(e.value)
    assert "a.txt" in msg and "10 label rows" in msg and "4 cached frames" in msg
    with pytest.raises(LabelError, match="17 cached frames"):
        align_to_frames(df, {"a": 17}, tolerance=3)
    with pytest.raises(LabelError, match="'a' has no cached features"):
        align_to_frames(df, {"zzz": 10})


def test_align_prefers_exact_id_and_keeps_sparse(tmp_path: Path) -> None:
    df = load_labels(_expr_root(tmp_path, {"a_left": [1, 2]}), "expr", "train")
    assert align_to_frames(df, {"a_left": 2, "a": 99})["feature_video"].to_list() == ["a_left", "a_left"]
    sparse = pl.DataFrame({"video": ["m", "m"], "feature_video": ["m", "m"], "frame": [0, 40], "expr": [1, 2],
                           "mask_expr": [True, True]})
    assert align_to_frames(sparse, {"m": 100})["frame"].to_list() == [0, 40]
    assert align_to_frames(sparse, {"m": 39}, tolerance=3)["frame"].to_list() == [0]


def test_labels_to_arrays_rows_masks_and_conflicts(tmp_path: Path) -> None:
    df = load_labels(_expr_root(tmp_path, {"a_left": [1, -1, 3], "a_right": [2, 2, -1], "b": [7, 6]}), "expr", "train")
    al = align_to_frames(df, {"a": 3, "b": 2})
    arr = labels_to_arrays(al, "expr", {"b": 0, "a": 4}, n_rows=8)
    assert arr["expr"].tolist() == [7, 6, 0, 0, 1, 2, 3, 0]
    assert arr["mask_expr"].tolist() == [True, True, False, False, True, True, True, False]
    same = labels_to_arrays(al, "expr", lambda v: {"b": 0, "a": 4}[v])
    assert same["expr"].tolist() == arr["expr"][:7].tolist()
    with pytest.raises(ValueError, match="no row offset"):
        labels_to_arrays(al, "expr", {"b": 0})


def test_labels_to_arrays_mtl_shapes(tmp_path: Path) -> None:
    aus = ",".join(["0", "1"] * 6)
    (tmp_path / "train_set.txt").write_text(f"image,valence,arousal,expression,aus\nv/00002.jpg,0.5,-0.5,4,{aus}\n"
                                            f"v/00004.jpg,-5,-5,-1,{aus}\n")
    arr = labels_to_arrays(load_labels(tmp_path, "mtl", "train"), "mtl", {"v": 10}, n_rows=20)
    assert arr["va"].shape == (20, 2) and arr["va"].dtype == np.float32 and arr["au"].shape == (20, 12)
    assert np.flatnonzero(arr["mask_va"]).tolist() == [11] and np.flatnonzero(arr["mask_au"]).tolist() == [11, 13]
    assert arr["va"][11].tolist() == [0.5, -0.5] and arr["va"][13].tolist() == [0, 0] and arr["expr"][11] == 4
