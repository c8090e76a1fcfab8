"""ABAW prediction files: write, read back in both styles, score against label files; clear errors on mismatches."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from affcli.common.vocab import AU_NAMES, EXPR_CLASSES, LSD_CLASSES
from affcli.heads.data.abaw_io import read_predictions, write_predictions
from affcli.heads.errors import LabelError
from affcli.heads.infer.score_files import score_predictions

HEADER = {"expr": ",".join(EXPR_CLASSES), "va": "valence,arousal", "au": ",".join(AU_NAMES)}
FOLDER = {"expr": "EXPR_Recognition_Challenge", "va": "VA_Estimation_Challenge", "au": "AU_Detection_Challenge"}
LENGTHS = {"v1_left": 30, "v1_right": 25, "v2": 40}


def _truth(task: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if task == "expr":
        return np.where(rng.random(n) < 0.2, -1, rng.integers(0, 8, n))
    if task == "va":
        return np.where(rng.random((n, 1)) < 0.2, -5.0, rng.uniform(-1, 1, (n, 2)).round(3))
    return np.where(rng.random((n, 1)) < 0.2, -1, rng.integers(0, 2, (n, 12)))


def _perfect(task: str, truth: np.ndarray) -> np.ndarray:
    """Predictions equal to the ground truth, any valid value where the label is invalid."""
    return np.where(truth < -1, 0, truth).astype(np.float32) if task == "va" else np.maximum(truth, 0)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """A label root with EXPR, VA and AU validation files of three ids, and the truths written."""
    base = tmp_path_factory.mktemp("labels")
    rng = np.random.default_rng(0)
    truths = {}
    for task in ("expr", "va", "au"):
        d = base / FOLDER[task] / "Validation_Set"
        d.mkdir(parents=True)
        truths[task] = {v: _truth(task, n, rng) for v, n in LENGTHS.items()}
        for v, t in truths[task].items():
            rows = "\n".join(",".join(str(x) for x in np.atleast_1d(r)) for r in t)
            (d / f"{v}.txt").write_text(f"{HEADER[task]}\n{rows}\n")
    return base, truths


@pytest.mark.parametrize("task", ["expr", "va", "au"])
@pytest.mark.parametrize("style", ["per-video", "single-file"])
def test_perfect_predictions_score_one(tmp_path: Path, root, task: str, style: str) -> None:
    base, truths = root
    per_video = {v: _perfect(task, t) for v, t in truths[task].items()}
    write_predictions(tmp_path, task, per_video, style=style)
    s = score_predictions(task, tmp_path, base, "val")
    key = {"expr": "f1_macro", "va": "p_va", "au": "f1_mean"}[task]
    assert s[key] == pytest.approx(1.0) and s["main"] == pytest.approx(1.0)
    assert s["n_videos"] == 3 and s["n_frames"] == sum(LENGTHS.values())
    json.dumps(s)


@pytest.mark.parametrize("task", ["expr", "va", "au", "mtl"])
def test_both_styles_read_back_identical(tmp_path: Path, task: str) -> None:
    rng = np.random.default_rng(1)
    one = {"expr": lambda n: rng.integers(0, 8, n), "va": lambda n: rng.uniform(-1, 1, (n, 2)).astype(np.float32),
           "au": lambda n: rng.integers(0, 2, (n, 12))}
    if task == "mtl":
        per_video = {v: {k: f(n) for k, f in one.items()} for v, n in LENGTHS.items()}
    else:
        per_video = {v: one[task](n) for v, n in LENGTHS.items()}
    a = read_predictions(write_predictions(tmp_path / "a", task, per_video, "per-video")[0].parent, task)
    b = read_predictions(write_predictions(tmp_path / "b", task, per_video, "single-file")[0], task)
    assert list(a) == sorted(LENGTHS) and set(b) == set(LENGTHS)
    for v, want in per_video.items():
        for k in (want if task == "mtl" else {task: want}):
            w = want[k] if task == "mtl" else want
            got_a, got_b = (a[v][k], b[v][k]) if task == "mtl" else (a[v], b[v])
            assert got_a.dtype == got_b.dtype == w.dtype and np.array_equal(got_a, w) and np.array_equal(got_b, w)


def test_frame_lists_pick_frames_and_carry_last(tmp_path: Path) -> None:
    path = write_predictions(tmp_path, "expr", {"v": np.array([3, 4, 5])}, "single-file", {"v": [2, 0, 4]})[0]
    assert path.read_text().splitlines()[1:] == ["v/00003.jpg,5", "v/00001.jpg,3", "v/00005.jpg,5"]


def test_missing_video_and_wrong_row_count(tmp_path: Path, root) -> None:
    base, truths = root
    per_video = {v: _perfect("expr", t) for v, t in truths["expr"].items()}
    write_predictions(tmp_path / "miss", "expr", {k: per_video[k] for k in ("v1_left", "v2")})
    with pytest.raises(LabelError, match=r"no predictions for 1 of 3 labelled videos \(e.g. 'v1_right'"):
        score_predictions("expr", tmp_path / "miss", base)
    short = dict(per_video, v2=per_video["v2"][:37])
    write_predictions(tmp_path / "short", "expr", short)
    with pytest.raises(LabelError) as e:
        score_predictions("expr", tmp_path / "short", base)
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "short" / "v2.txt")) and "37 prediction rows" in msg and "has 40 rows" in msg
    assert score_predictions("expr", tmp_path / "short", base, tolerance=3)["n_frames"] == sum(LENGTHS.values())


def test_feature_video_ids_match_left_right_labels(tmp_path: Path, root) -> None:
    base, truths = root
    write_predictions(tmp_path, "expr", {"v1": _perfect("expr", truths["expr"]["v1_left"]),
                                         "v2": _perfect("expr", truths["expr"]["v2"])})
    with pytest.raises(LabelError, match="'v1' but the label file .*v1_right.txt has 25 rows"):
        score_predictions("expr", tmp_path, base)


def test_mtl_and_lsd_score(tmp_path: Path) -> None:
    aus = ",".join(["0", "1"] * 6)
    (tmp_path / "validation_set_annotations.txt").write_text(
        f"image,valence,arousal,expression,aus\nv/00003.jpg,0.5,-0.5,4,{aus}\nv/00009.jpg,-0.1,0.3,2,{aus}\n"
        f"w/00001.jpg,-5,-5,1,{','.join(['1'] * 12)}\nw/00002.jpg,0.2,0.1,-1,{aus}\n")
    au = np.array([[0, 1] * 6] * 4)
    au[2] = 1
    pred = {"v": {"va": np.array([[0.5, -0.5]] * 3 + [[-0.1, 0.3]] * 6, np.float32),
                  "expr": np.array([4] * 3 + [2] * 6),
                  "au": np.array([[0, 1] * 6] * 9)},
            "w": {"va": np.array([[0, 0], [0.2, 0.1]], np.float32), "expr": np.array([1, 0]), "au": au[2:]}}
    write_predictions(tmp_path / "p", "mtl", pred, "single-file", {"v": [2, 8], "w": [0, 1]})
    s = score_predictions("mtl", tmp_path / "p", tmp_path)
    # VA and AU perfect; EXPR perfect on the 3 classes present of 8: P_MTL = 1 + 3/8 + 1
    assert s["p_va"] == pytest.approx(1.0) and s["p_au"] == pytest.approx(1.0)
    assert s["p_mtl"] == pytest.approx(2 + 3 / 8)
    write_predictions(tmp_path / "q", "mtl", pred, "single-file", {"v": [2], "w": [0, 1]})
    with pytest.raises(LabelError, match=r"no prediction for 1 labelled frames \(e.g. 'v' frame 00009\)"):
        score_predictions("mtl", tmp_path / "q", tmp_path)

    lsd = tmp_path / "lsd" / "validation_set_real_images"
    for i, cls in enumerate(LSD_CLASSES):
        (lsd / cls).mkdir(parents=True)
        (lsd / cls / f"{i + 10}.jpg").write_bytes(b"")
    path = write_predictions(tmp_path / "lp", "lsd", {str(i + 10): np.array([i]) for i in range(6)}, "single-file")[0]
    assert path.read_text().splitlines()[:2] == ["image,expression", "10.jpg,0"]
    assert score_predictions("lsd", path, tmp_path / "lsd")["p_lsd"] == pytest.approx(1.0)


def test_cli_score_prints_json_or_one_line_error(tmp_path: Path, root) -> None:
    from affcli.cli import app

    base, truths = root
    write_predictions(tmp_path, "va", {v: _perfect("va", t) for v, t in truths["va"].items()})
    r = CliRunner().invoke(app, ["score", "--task", "va", "--pred", str(tmp_path), "--labels", str(base)])
    assert r.exit_code == 0 and json.loads(r.stdout)["p_va"] == pytest.approx(1.0)
    r = CliRunner().invoke(app, ["score", "--task", "va", "--pred", str(tmp_path / "none"), "--labels", str(base)])
    assert r.exit_code == 2 and "none: no such prediction file or folder" in r.output


@pytest.mark.parametrize("labels_at", ["challenge", "flat"])
def test_score_against_a_challenge_folder_or_a_flat_split_folder(tmp_path: Path, root, labels_at: str) -> None:
    base, truths = root
    labels = base / FOLDER["expr"] / ("." if labels_at == "challenge" else "Validation_Set")
    write_predictions(tmp_path, "expr", {v: _perfect("expr", t) for v, t in truths["expr"].items()})
    s = score_predictions("expr", tmp_path, labels, "val")
    assert s["main"] == pytest.approx(1.0) and s["n_frames"] == sum(LENGTHS.values())
    wrong = {v: (_perfect("expr", t) + 1) % 8 for v, t in truths["expr"].items()}
    write_predictions(tmp_path / "w", "expr", wrong)
    assert score_predictions("expr", tmp_path / "w", labels, "val")["main"] == pytest.approx(0.0)


def test_cli_score_refuses_a_folder_of_no_known_shape(tmp_path: Path, root) -> None:
    from affcli.cli import app

    base, truths = root
    write_predictions(tmp_path / "p", "va", {v: _perfect("va", t) for v, t in truths["va"].items()})
    (tmp_path / "nothing" / "sub").mkdir(parents=True)
    r = CliRunner().invoke(app, ["score", "--task", "va", "--pred", str(tmp_path / "p"),
                                 "--labels", str(tmp_path / "nothing")])
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {tmp_path / 'nothing'}: no va annotations") and "flat folder" in lines[0]
