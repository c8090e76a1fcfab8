"""Hostile inputs to `extract` (issue 20, part B): every bad input is one line naming its file while the others
complete, and nothing is replaced or dropped silently.

Classes: ids that hold control characters or cannot name a file (video files, frame folders, image files), frame and
image files whose bytes lie (a header claiming 65000x65000, junk, empty, cut short, a stray frame number), a backbone
given twice, and `prompts` over a built-in or cached prompt set.
"""
from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from affcli.cache.store import FeatureStore
from affcli.cli import app
from affcli.pipeline.config import ExtractConfig
from affcli.pipeline.extract import run_extract
from affcli.pipeline.frames import read_image
from affcli.pipeline.sources import discover_sources
from affcli.synthetic.media import write_test_video

CLIP = "clip:tiny"
FAST = ["--device", "cpu", "--face", "none", "--batch-size", "16"]


def _extract(*args: str):
    return CliRunner().invoke(app, ["extract", "-b", CLIP, *FAST, *args])


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("v") / "good.mp4", 8, 25.0, (64, 48), picture="noise")


# ---- ids that cannot be ids --------------------------------------------------------------------------------------

BAD_IDS = {"newline": "bad\nname", "tab": "tab\tname", "bell": "bell\x07", "delete": "del\x7f", "nel": "nel\x85x",
           "line-separator": "ls\u2028x", "bidi-override": "rtl\u202eevil", "dot": ".", "dotdot": "..",
           "vertical-tab": "vt\x0bx", "leading-space": " lead"}


def _escaped(name: str) -> str:
    return name if name in (".", "..", " lead") else name.encode("unicode_escape").decode()


def test_video_files_whose_ids_are_not_ids_are_refused_one_line_each(clip, tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    shutil.copy(clip, vids / "good.mp4")
    for name in BAD_IDS.values():
        shutil.copy(clip, vids / (name + ".mp4"))
    cache = tmp_path / "c.zarr"
    r = _extract("--cache", str(cache), "--video-dir", str(vids))
    assert r.exit_code == 1, r.output  # failed inputs, the rest done
    refused = [ln for ln in _lines(r.output) if ln.startswith("error:") and "refused" in ln]
    for case, name in BAD_IDS.items():
        assert sum(f"id '{_escaped(name)}'" in ln and "rename it" in ln for ln in refused) == 1, (case, r.output)
    store = FeatureStore(cache, mode="r")
    assert store.videos(CLIP) == ["good"] and store.failures(CLIP) == {}  # nothing of the bad names is stored


def test_frame_folders_whose_ids_are_not_ids_are_refused(tmp_path):
    crops = tmp_path / "crops"
    names = ["newline", "tab", "bell", "bidi-override"]
    for name in ["good"] + [BAD_IDS[n] for n in names]:
        (crops / name).mkdir(parents=True)
        (crops / name / "00001.jpg").write_bytes(_jpg())
    refused = []
    assert [s.video_id for s in discover_sources(frames_dir=crops, refused=refused)] == ["good"]
    assert len(refused) == len(names) and all("\n" not in r.message and "rename it" in r.message for r in refused)
    res = run_extract(ExtractConfig(cache=tmp_path / "c.zarr", backbones=[CLIP], frames_dir=crops, device="cpu"))
    assert sorted((r.status, "refused" in r.message) for r in res) == [("failed", True)] * len(names) + [("ok", False)]


def test_a_filter_naming_a_refused_id_refuses_it_and_warns_without_a_list(clip, tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    for name in ("a", "b\x01"):
        shutil.copy(clip, vids / f"{name}.mp4")
    refused = []
    assert discover_sources(vids, videos=["b\x01"], refused=refused) == [] and len(refused) == 1
    assert [s.video_id for s in discover_sources(vids, videos="a", refused=refused[:0])] == ["a"]
    with pytest.warns(UserWarning, match=r"b\\x01"):
        assert [s.video_id for s in discover_sources(vids)] == ["a"]


def test_image_files_whose_names_cannot_be_stored_are_left_out_named(tmp_path):
    tree = tmp_path / "tree" / "cls"
    tree.mkdir(parents=True)
    cv2.imwrite(str(tree / "a.png"), np.full((20, 20, 3), 60, np.uint8))
    for name in ("b\nc.png", "d\x02.png"):
        shutil.copy(tree / "a.png", tree / name)
    cache = tmp_path / "c.zarr"
    r = _extract("--cache", str(cache), "--images-dir", str(tmp_path / "tree"))
    assert r.exit_code == 0, r.output
    warned = [ln for ln in _lines(r.output) if ln.startswith("warning:")]
    assert len(warned) == 2 and any("b\\nc.png" in w for w in warned) and any("d\\x02.png" in w for w in warned)
    from affcli.cache.rows import read_paths

    assert read_paths(FeatureStore(cache, mode="r"), CLIP, "cls") == ["cls/a.png"]


# ---- frames and images whose bytes lie ---------------------------------------------------------------------------

def _jpg(side: int = 24, value: int = 120) -> bytes:
    return cv2.imencode(".jpg", np.full((side, side, 3), value, np.uint8))[1].tobytes()


def _claiming(w: int, h: int) -> bytes:
    data = bytearray(_jpg())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


LIARS = {
    "claims-65000x65000": (_claiming(65000, 65000), "header claims"),
    "claims-20000x20000": (_claiming(20000, 20000), "header claims"),
    "claims-2000x2000": (_claiming(2000, 2000), "bytes can hold"),  # under the size cap, far over its data
    "claims-1200x900": (_claiming(1200, 900), "bytes can hold"),
    "junk": (b"\x00garbage" * 50, "not an image"),
    "empty": (b"", "empty"),
    "cut-short-jpg": (_jpg(64)[:300], "cut short"),
    "cut-short-png": (cv2.imencode(".png", np.full((40, 40, 3), 7, np.uint8))[1].tobytes()[:60], "cut short"),
}


def test_lying_frames_are_invalid_frames_named_one_line_each(tmp_path):
    folder = tmp_path / "crops" / "v1"
    folder.mkdir(parents=True)
    (folder / "00001.jpg").write_bytes(_jpg())
    bad = {}
    for i, case in enumerate(sorted(LIARS), start=2):
        data, problem = LIARS[case]
        bad[case] = folder / (f"{i:05d}.png" if case.endswith("png") else f"{i:05d}.jpg")
        bad[case].write_bytes(data)
        img, why = read_image(bad[case])
        assert img is None and problem in why, case
    (folder / f"{len(LIARS) + 2:05d}.jpg").write_bytes(_jpg())
    cache = tmp_path / "c.zarr"
    r = _extract("--cache", str(cache), "--frames-dir", str(tmp_path / "crops"))
    assert r.exit_code == 0, r.output
    warned = [ln for ln in _lines(r.output) if ln.startswith("warning:")]
    assert len(warned) == len(LIARS), r.output
    for case, path in bad.items():
        assert sum(str(path) in w and LIARS[case][1] in w for w in warned) == 1, (case, r.output)
    assert "Assertion" not in r.output and "Traceback" not in r.output
    rec = FeatureStore(cache, mode="r").read_video(CLIP, "v1")
    assert rec.valid.tolist() == [True] + [False] * len(LIARS) + [True]


@pytest.mark.parametrize("side", [8, 333, 1024, 2048])
@pytest.mark.parametrize("params", [[], [cv2.IMWRITE_JPEG_QUALITY, 1], [cv2.IMWRITE_JPEG_OPTIMIZE, 1],
                                    [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 1],
                                    [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411]])
def test_honest_jpegs_that_compress_well_are_not_taken_for_liars(side, params, tmp_path):
    for value in (0, 128, 255):  # one flat colour: the fewest bytes a JPEG of this size can take
        path = tmp_path / f"{value}.jpg"
        path.write_bytes(cv2.imencode(".jpg", np.full((side, side + 5, 3), value, np.uint8), params)[1].tobytes())
        img, why = read_image(path)
        assert why is None and img.shape == (side, side + 5, 3), (side, params, value, why)


def test_lying_still_images_are_invalid_rows_and_the_folder_goes_on(tmp_path):
    folder = tmp_path / "tree" / "cls"
    folder.mkdir(parents=True)
    cases = ["claims-65000x65000", "claims-2000x2000", "cut-short-jpg", "empty", "junk"]
    (folder / "a.jpg").write_bytes(_jpg())
    for case in cases:
        (folder / f"b-{case}.jpg").write_bytes(LIARS[case][0])
    (folder / "c.jpg").write_bytes(_jpg())
    cache = tmp_path / "c.zarr"
    r = _extract("--cache", str(cache), "--images-dir", str(tmp_path / "tree"))
    assert r.exit_code == 0, r.output
    warned = [ln for ln in _lines(r.output) if ln.startswith("warning:")]
    assert len(warned) == len(cases), r.output
    for case in cases:
        assert sum(f"b-{case}.jpg" in w and LIARS[case][1] in w for w in warned) == 1, (case, r.output)
    assert FeatureStore(cache, mode="r").read_video(CLIP, "cls").valid.tolist() == [True] + [False] * 5 + [True]


def test_a_stray_frame_number_fails_its_folder_only(tmp_path):
    crops = tmp_path / "crops"
    for vid, names in (("v1", ["00001.jpg", "99999999999.jpg"]), ("v2", ["00001.jpg"]), ("v3", ["00001.jpg\n"])):
        (crops / vid).mkdir(parents=True)
        for n in names:
            (crops / vid / n).write_bytes(_jpg())
    cache = tmp_path / "c.zarr"
    r = _extract("--cache", str(cache), "--frames-dir", str(crops))
    assert r.exit_code == 1, r.output
    assert re.search(r"v1: failed .*99999999999\.jpg.*frame number", r.output.replace("\n", " ")), r.output
    store = FeatureStore(cache, mode="r")
    assert store.videos(CLIP) == ["v2"] and set(store.failures(CLIP)) == {"v1", "v3"}


# ---- every option checked once: a backbone given twice ------------------------------------------------------------

TWICE = [[CLIP, CLIP], [CLIP, "wav2vec2:tiny", CLIP], [CLIP, CLIP, CLIP], ["wav2vec2:tiny", "wav2vec2:tiny"]]


@pytest.mark.parametrize("specs", TWICE)
def test_a_backbone_given_twice_is_refused_by_the_config(specs, tmp_path):
    for inputs in ("video_dir", "frames_dir", "images_dir"):
        with pytest.raises(ValueError, match="give each backbone once"):
            ExtractConfig(cache=str(tmp_path / "c.zarr"), backbones=specs, **{inputs: tmp_path}).validate()


@pytest.mark.parametrize("inputs,specs", [("--video-dir", TWICE[1]), ("--images-dir", TWICE[0])])
def test_a_backbone_given_twice_is_refused_before_anything_runs(inputs, specs, clip, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(clip, src / "v.mp4")
    cv2.imwrite(str(src / "i.png"), np.zeros((8, 8, 3), np.uint8))
    cache = tmp_path / "c.zarr"
    args = [a for s in specs for a in ("-b", s)]
    r = CliRunner().invoke(app, ["extract", *args, "--device", "cpu", "--cache", str(cache), inputs, str(src)])
    assert r.exit_code == 2 and len(_lines(r.output)) == 1, r.output
    assert "given" in r.output and "once" in r.output and not cache.exists()


@pytest.mark.parametrize("field,value", [("backbones", []), ("decode_batch", 0), ("decode_workers", 0),
                                         ("batch_size", -1), ("decode_memory_mb", 8), ("frames_fps", float("nan"))])
def test_counts_out_of_range_are_refused(field, value, tmp_path):
    cfg = ExtractConfig(cache=str(tmp_path / "c.zarr"), backbones=[CLIP], video_dir=tmp_path)
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match="extract: "):
        cfg.validate()


# ---- prompts: a built-in or cached set is not replaced silently ---------------------------------------------------

def _prompts(cache: Path, *args: str):
    return CliRunner().invoke(app, ["prompts", "--cache", str(cache), "-b", CLIP, "--device", "cpu", *args])


@pytest.mark.parametrize("builtin", ["expr8", "lsd6"])
def test_a_prompt_file_never_replaces_a_built_in_set_without_overwrite(builtin, tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("a happy face\na sad face\n")
    cache = tmp_path / "p.zarr"
    r = _prompts(cache, "--file", str(f), "--name", builtin)
    assert r.exit_code == 2 and len(_lines(r.output)) == 1 and "built in" in r.output and not cache.exists()
    assert _prompts(cache, "--set", builtin).exit_code == 0
    before = FeatureStore(cache, mode="r").read_text_embeddings(builtin, CLIP)[0]
    r = _prompts(cache, "--file", str(f), "--name", builtin)
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert FeatureStore(cache, mode="r").read_text_embeddings(builtin, CLIP)[0] == before
    r = _prompts(cache, "--file", str(f), "--name", builtin, "--overwrite", "--set", builtin)
    assert r.exit_code == 0, r.output
    assert FeatureStore(cache, mode="r").read_text_embeddings(builtin, CLIP)[0] == ["a happy face", "a sad face"]
    r = _prompts(cache)  # the default sets never put the built-in list back over the replaced one
    assert r.exit_code == 0, r.output
    if builtin in ("expr8", "va9"):
        assert f"prompt set {builtin!r} is cached for {CLIP} with other prompts: left as it is" in r.output
    assert FeatureStore(cache, mode="r").read_text_embeddings(builtin, CLIP)[0] == ["a happy face", "a sad face"]


@pytest.mark.parametrize("name", ["mine", "../x", "a/b", "x\ny", ""])
def test_a_custom_set_is_not_replaced_by_another_list_and_names_are_checked(name, tmp_path):
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("first\n")
    two.write_text("second\n")
    cache = tmp_path / "p.zarr"
    r = _prompts(cache, "--file", str(one), "--name", name, "--set", "lsd6")
    if name != "mine":
        assert r.exit_code == 2 and len(_lines(r.output)) == 1 and "cannot name a file" in r.output, r.output
        return
    assert r.exit_code == 0, r.output
    assert _prompts(cache, "--file", str(one), "--name", name, "--set", "lsd6").exit_code == 0  # same list: fine
    r = _prompts(cache, "--file", str(two), "--name", name, "--set", "lsd6")
    assert r.exit_code == 2 and "with other prompts" in r.output
    assert FeatureStore(cache, mode="r").read_text_embeddings(name, CLIP)[0] == ["first"]
    assert _prompts(cache, "--file", str(two), "--name", name, "--set", "lsd6", "--overwrite").exit_code == 0
    assert FeatureStore(cache, mode="r").read_text_embeddings(name, CLIP)[0] == ["second"]


# ---- invalid-frame lines are never silenced by another thread's warning filters -----------------------------------

def _overlapping_header_reads(monkeypatch, threads: int = 2) -> None:
    """Make every `threads` concurrent header reads overlap, the one that started last ending last: the order in which
    a `catch_warnings` per read leaves a catch-all `ignore` behind (each restores the filters it saw on entry)."""
    import threading
    import time

    from PIL import Image

    real, lock, order = Image.open, threading.Lock(), []
    barrier = threading.Barrier(threads, timeout=2)

    def overlapping(*a, **kw):
        with lock:
            order.append(threading.get_ident())
            mine = len(order)
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        if mine % threads == 0:
            time.sleep(0.05)
        return real(*a, **kw)

    monkeypatch.setattr(Image, "open", overlapping)


def test_concurrent_header_reads_leave_the_warning_filters_as_they_were(tmp_path, monkeypatch):
    import warnings

    from affcli.pipeline.frames import iter_frame_folder

    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(1, 9):
        (folder / f"{i:05d}.jpg").write_bytes(_claiming(65000, 65000) if i % 2 == 0 else _jpg())
    with pytest.warns(UserWarning):  # Pillow's one-time filter, if any, is in place
        next(iter_frame_folder(folder, 8, size=32, threads=2))
    _overlapping_header_reads(monkeypatch)
    before = list(warnings.filters)
    with pytest.warns(UserWarning) as got:
        batches = list(iter_frame_folder(folder, 4, size=32, threads=2))
    assert list(warnings.filters) == before  # no catch-all `ignore` left behind
    said = [str(w.message) for w in got if "invalid image" in str(w.message)]
    assert sorted(s.split(":")[0] for s in said) == [str(folder / f"{i:05d}.jpg") for i in (2, 4, 6, 8)]
    assert np.concatenate([ok for *_, ok in batches]).tolist() == [True, False] * 4


@pytest.mark.parametrize("inputs", ["--frames-dir", "--images-dir"])
def test_every_lying_frame_of_every_folder_is_named_when_reads_overlap(inputs, tmp_path, monkeypatch):
    root = tmp_path / "in"
    bad = []
    for vid in ("a", "b", "c"):
        (root / vid).mkdir(parents=True)
        for i in range(1, 7):
            path = root / vid / f"{i:05d}.jpg"
            liar = i in (2, 3, 5)
            path.write_bytes(_claiming(65000, 65000) if liar else _jpg())
            bad += [path] if liar else []
    _overlapping_header_reads(monkeypatch)
    r = _extract("--cache", str(tmp_path / "c.zarr"), inputs, str(root), "--decode-workers", "2")
    assert r.exit_code == 0, r.output
    warned = [ln for ln in _lines(r.output) if ln.startswith("warning:")]
    for path in bad:
        assert sum(str(path) in w and "header claims" in w for w in warned) == 1, (path, r.output)
    assert len(warned) == len(bad), r.output
