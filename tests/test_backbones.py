"""Backbones: specs, tiny models of the real architectures, real loading code round-trips, fingerprints."""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from affcli.common.registry import UnknownNameError
from affcli.pipeline.backbones import BACKBONES, BackboneError, TextEncoder, build_backbone, parse_spec
from affcli.pipeline.backbones.clip import CONFIG_DIR
from affcli.pipeline.prompts import PROMPT_SETS, VA9_CENTRES, prompt_set


@pytest.fixture(scope="module")
def clip_tiny():
    return build_backbone("clip:tiny")


@pytest.fixture(scope="module")
def w2v_tiny():
    return build_backbone("wav2vec2:tiny")


@pytest.fixture(scope="module")
def ast_tiny():
    return build_backbone("ast:tiny")


def _faces(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _wav(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)


def test_parse_spec_and_registry():
    assert parse_spec("clip:ViT-B-16/openai") == ("clip", "ViT-B-16/openai")
    assert parse_spec("clip:local-dir:/x/y") == ("clip", "local-dir:/x/y")
    assert parse_spec("ast:MIT/ast-finetuned-audioset-10-10-0.4593")[0] == "ast"
    assert set(BACKBONES.names()) >= {"clip", "wav2vec2", "ast", "fer"}
    with pytest.raises(UnknownNameError, match="clip"):
        parse_spec("vggish:base")
    with pytest.raises(UnknownNameError):
        build_backbone("no-colon")


def test_clip_tiny_embeds_batched(clip_tiny):
    b = clip_tiny
    assert (b.modality, b.dim, b.input_size) == ("visual", 64, 32)
    x = b.preprocess(_faces(6, b.input_size))
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32 and x.device == b.device
    e = b.embed(x)
    assert e.shape == (6, 64) and e.dtype == torch.float32 and e.device.type == "cpu"
    one = torch.cat([b.embed(x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(e, one, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(e[0], e[1]), "different faces must embed differently"
    big = b.preprocess(_faces(2, 64))
    assert big.shape == (2, 3, 32, 32), "crops of another size are resized to the model's input"
    assert all(not p.requires_grad for p in b.model.parameters()) and not b.model.training


def test_clip_text_prompts(clip_tiny):
    assert isinstance(clip_tiny, TextEncoder)
    t = clip_tiny.encode_text(prompt_set("expr8"))
    assert t.shape == (8, 64) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-5)
    assert np.abs(t[0] - t[1]).max() > 1e-3
    va = clip_tiny.encode_text(PROMPT_SETS["va9"])
    assert va.shape == (27, 64)


def test_prompt_sets():
    assert PROMPT_SETS["expr8"][4] == "A face expressing Happiness" and len(PROMPT_SETS["expr8"]) == 8
    assert len(PROMPT_SETS["va9"]) == 27 and len(set(PROMPT_SETS["va9"])) == 27
    assert VA9_CENTRES.shape == (9, 2)
    np.testing.assert_allclose(VA9_CENTRES[1], [-0.66, 0.0])  # valence-major
    np.testing.assert_allclose(VA9_CENTRES[3], [0.0, -0.66])
    assert len(prompt_set("lsd6")) == 6
    with pytest.raises(UnknownNameError):
        prompt_set("nope")


def test_fingerprint_deterministic_by_seed(clip_tiny, w2v_tiny):
    fp = clip_tiny.fingerprint()
    assert fp["spec"] == "clip:tiny" and fp["dim"] == 64 and fp["dtype"] == "float16"
    assert set(fp["versions"]) == {"torch", "open_clip"} and "mean" in fp["preprocessing"]
    assert build_backbone("clip:tiny", seed=0).fingerprint()["weights_sha256"] == fp["weights_sha256"]
    assert build_backbone("clip:tiny", seed=1).fingerprint()["weights_sha256"] != fp["weights_sha256"]
    json.dumps(fp), json.dumps(w2v_tiny.fingerprint())
    w = w2v_tiny.fingerprint()
    assert w["versions"].keys() == {"torch", "transformers"} and w["preprocessing"]["step_s"] == 0.02
    assert build_backbone("wav2vec2:tiny").fingerprint()["weights_sha256"] == w["weights_sha256"]


def _save_open_clip_dir(model: torch.nn.Module, folder, with_config: bool = True):
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((CONFIG_DIR / "clip-tiny.json").read_text())
    if with_config:
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(folder / "open_clip_model.safetensors"))
    torch.save(sd, folder / "ckpt.pt")


def test_clip_loads_local_dir_and_checkpoints(clip_tiny, tmp_path):
    _save_open_clip_dir(clip_tiny.model, tmp_path / "oc")
    x = clip_tiny.preprocess(_faces(3, 32, seed=1))
    ref = clip_tiny.embed(x)
    text = clip_tiny.encode_text(["A face expressing Anger"])
    specs = ["clip:local-dir:" + str(tmp_path / "oc"), "clip:" + str(tmp_path / "oc" / "ckpt.pt"),
             "clip:clip-tiny/" + str(tmp_path / "oc" / "ckpt.pt")]
    for spec in specs:
        b = build_backbone(spec, seed=123)  # weights come from disk, not from the seed
        torch.testing.assert_close(b.embed(b.preprocess(_faces(3, 32, seed=1))), ref, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(b.encode_text(["A face expressing Anger"]), text, atol=1e-5)
        assert b.fingerprint()["weights_sha256"] == clip_tiny.fingerprint()["weights_sha256"]


def test_clip_load_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "open_clip_config.json").write_text((CONFIG_DIR / "clip-tiny.json").read_text())
    specs = ["clip:local-dir:" + str(tmp_path / "missing"), "clip:" + str(tmp_path / "nope.pt"), "clip:ViT-B-16",
             "clip:local-dir:" + str(tmp_path / "empty"), "clip:clip-tiny/" + str(tmp_path / "nope.pt")]
    for spec in specs:
        with pytest.raises(BackboneError) as e:
            build_backbone(spec)
        assert str(e.value).startswith(spec + ":") and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["wav2vec2", "ast"])
def test_transformers_round_trip_through_from_pretrained(kind, w2v_tiny, ast_tiny, tmp_path):
    tiny = {"wav2vec2": w2v_tiny, "ast": ast_tiny}[kind]
    tiny.model.save_pretrained(tmp_path / kind)
    if kind == "ast":
        tiny.fe.save_pretrained(tmp_path / kind)
    loaded = build_backbone(f"{kind}:{tmp_path / kind}", seed=7)
    assert loaded.fingerprint()["weights_sha256"] == tiny.fingerprint()["weights_sha256"]
    assert loaded.fingerprint()["preprocessing"] == tiny.fingerprint()["preprocessing"]
    wav, ts = _wav(2.0), np.arange(0, 2.2, 1 / 25)
    f0, v0 = tiny.embed_audio(wav, ts, "centered")
    f1, v1 = loaded.embed_audio(wav, ts, "centered")
    np.testing.assert_array_equal(v0, v1)
    np.testing.assert_allclose(f0, f1, atol=1e-5)
    assert f0.shape == (len(ts), tiny.dim) and v0[ts <= 2.0].all() and not v0[ts > 2.0].any()


@pytest.mark.parametrize("kind", ["wav2vec2", "ast"])
def test_missing_local_folder_is_a_clear_error(kind, tmp_path):
    spec = f"{kind}:{tmp_path / 'not-there'}"
    with pytest.raises(BackboneError, match="not found") as e:
        build_backbone(spec)
    assert str(e.value).startswith(spec + ":") and "\n" not in str(e.value)


def test_audio_dims_and_rates(w2v_tiny, ast_tiny):
    assert (w2v_tiny.dim, ast_tiny.dim) == (32, 32)
    st = w2v_tiny.steps(_wav(10.0), causal=False)
    assert len(st.centre) == 499, "default conv strides keep Wav2Vec2 at 50 Hz (10 s -> 499 steps)"
    np.testing.assert_allclose(np.diff(st.centre), 0.02)
    a = ast_tiny.steps(_wav(10.24), causal=False)
    assert len(a.centre) == 101 and a.feats.shape == (101, 32)  # 12 freq x 101 time patches -> 101 steps
    np.testing.assert_allclose(np.diff(a.centre), 0.1)


def test_wav2vec2_chunks_stitch_without_gaps(w2v_tiny):
    b = build_backbone("wav2vec2:tiny")
    b.chunk_s, b.overlap_s = 2.0, 0.5
    st = b.steps(_wav(7.3), causal=False)
    whole = w2v_tiny.steps(_wav(7.3), causal=False)
    np.testing.assert_allclose(st.centre, whole.centre)  # same 50 Hz grid, each step once
    assert st.feats.shape == whole.feats.shape
    wav = _wav(7.3)
    first = b._forward(wav[None, :32000])[0]  # the first 2 s chunk alone owns the steps before the overlap's middle
    own = st.centre * 16000 < (1.5 * 16000 + 2.0 * 16000) / 2
    np.testing.assert_allclose(st.feats[own], first[: own.sum()], atol=1e-5)
    rel = np.linalg.norm(st.feats - whole.feats) / np.linalg.norm(whole.feats)
    assert rel < 0.06, f"stitched steps differ from one unchunked pass by {rel:.3f} on stationary noise"
    a = st.feats / np.linalg.norm(st.feats, axis=1, keepdims=True)
    w = whole.feats / np.linalg.norm(whole.feats, axis=1, keepdims=True)
    np.testing.assert_array_equal((a @ w.T).argmax(1), np.arange(len(a)))  # every step lands on its own time


def test_ast_runs_once_per_segment(ast_tiny):
    calls = []
    h = ast_tiny.model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        feats, valid = ast_tiny.embed_audio(_wav(25.0), np.arange(0, 25.0, 1 / 30), "centered")
    finally:
        h.remove()
    assert sum(calls) == 3, "25 s with 10.24 s segments and 2 s overlap is 3 passes, not one per frame"
    assert valid.all() and feats.shape == (750, 32)


def test_random_weight_real_architecture_spec_parses():
    from affcli.pipeline.backbones.clip import _resolve

    assert _resolve("ViT-B-16/random") == ("ViT-B-16", None)
    assert _resolve("ViT-L-14/openai") == ("ViT-L-14", "openai")
    assert _resolve("tiny") == ("clip-tiny", None)
