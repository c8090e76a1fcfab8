"""Issue 18 backbones: DINOv2, WavLM, HuBERT, Whisper (encoder only), timm, openSMILE and Silero VAD. The real loading
code of each transformers kind is tested by a save/load round trip of a tiny twin built from a config (no hub);
layers are feature sets of their own; a hub that does not answer is one line; openSMILE measures pitch right and
never looks ahead under `causal`; the VAD equals the package's own TorchScript model."""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from affcli.cache.fingerprint import fingerprint_diff
from affcli.pipeline.backbones import BackboneError, build_backbone
from affcli.pipeline.backbones.spec import split_spec

SR = 16000


def _wav(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)


def _faces(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _tone(hz: float, seconds: float = 2.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def test_spec_options_parse_and_name_the_feature_set():
    assert split_spec("wavlm:microsoft/wavlm-large(layer=6)") == ("wavlm", "microsoft/wavlm-large", {"layer": 6})
    assert split_spec("dinov2:facebook/dinov2-large(pool=both)")[2] == {"pool": "both"}
    assert split_spec("clip:local-dir:/x/y") == ("clip", "local-dir:/x/y", {})
    assert split_spec("wav2vec2:/models/a (v2)") == ("wav2vec2", "/models/a (v2)", {})
    from affcli.common.registry import OptionError

    with pytest.raises(OptionError, match="takes no option 'lyr'; valid options: layer") as e:
        build_backbone("wavlm:tiny(lyr=1)")
    assert "\n" not in str(e.value) and str(e.value).startswith("wavlm:tiny(lyr=1):")


@pytest.mark.parametrize("kind", ["wav2vec2", "wavlm", "hubert", "whisper"])
def test_layer_choice_is_its_own_feature_set(kind):
    last, first, mean = (build_backbone(f"{kind}:tiny{o}") for o in ("", "(layer=0)", "(layer=mean)"))
    fps = [b.fingerprint() for b in (last, first, mean)]
    assert "preprocessing" in fingerprint_diff(fps[0], fps[1]) and "preprocessing" in fingerprint_diff(fps[1], fps[2])
    assert fps[0]["weights_sha256"] == fps[1]["weights_sha256"], "same model, another layer"
    assert fps[1]["preprocessing"]["layer"] == 0 and fps[2]["preprocessing"]["layer"] == "mean"
    wav, ts = _wav(1.5), np.arange(0, 1.5, 1 / 25)
    f = [b.embed_audio(wav, ts, "centered")[0] for b in (last, first, mean)]
    assert np.abs(f[0] - f[1]).max() > 1e-3 and np.abs(f[1] - f[2]).max() > 1e-3
    assert build_backbone(f"{kind}:tiny(layer=-1)").embed_audio(wav, ts, "centered")[0] == pytest.approx(f[0], abs=1e-4)
    with pytest.raises(BackboneError, match="outside the model's hidden states 0..2"):
        build_backbone(f"{kind}:tiny(layer=3)")


@pytest.mark.parametrize("kind", ["wavlm", "hubert"])
def test_speech_kinds_round_trip_through_from_pretrained(kind, tmp_path):
    tiny = build_backbone(f"{kind}:tiny(layer=1)")
    tiny.model.save_pretrained(tmp_path / kind)
    loaded = build_backbone(f"{kind}:{tmp_path / kind}(layer=1)", seed=9)
    assert loaded.fingerprint()["weights_sha256"] == tiny.fingerprint()["weights_sha256"]
    assert loaded.fingerprint()["preprocessing"] == tiny.fingerprint()["preprocessing"]
    wav, ts = _wav(2.0), np.arange(0, 2.2, 1 / 25)
    for align in ("centered", "causal"):
        f0, v0 = tiny.embed_audio(wav, ts, align)
        f1, v1 = loaded.embed_audio(wav, ts, align)
        np.testing.assert_array_equal(v0, v1)
        np.testing.assert_allclose(f0, f1, atol=1e-5)
    assert v0.any() and not v0[ts > 2.0].any()


@pytest.mark.parametrize("saved_as", ["WhisperForConditionalGeneration", "WhisperModel"])
def test_whisper_loads_the_encoder_only(saved_as, tmp_path):
    import transformers
    from transformers import WhisperConfig

    from affcli.pipeline.backbones.hub import CONFIG_DIR

    cfg = WhisperConfig(**json.loads((CONFIG_DIR / "whisper-tiny.json").read_text()))
    torch.manual_seed(0)
    full = getattr(transformers, saved_as)(cfg)
    full.save_pretrained(tmp_path / "w")
    b = build_backbone(f"whisper:{tmp_path / 'w'}")
    enc = full.model.encoder if saved_as == "WhisperForConditionalGeneration" else full.encoder
    mine = b.model.state_dict()
    assert set(mine) == set(enc.state_dict()), "exactly the encoder's tensors, no decoder"
    assert all(torch.equal(mine[k], v) for k, v in enc.state_dict().items())
    assert not any("decoder" in k for k in mine)
    wav = _wav(3.0)
    mel = b.fe(wav, sampling_rate=SR, return_tensors="pt")["input_features"]
    with torch.no_grad():
        ref = enc(mel).last_hidden_state[0].numpy()
    st = b.steps(wav, causal=False)
    n = len(st.centre)
    np.testing.assert_allclose(st.feats, ref[:n], atol=1e-4)
    assert st.centre.max() <= 3.0 and n == 151, "steps centred past 3 s (silence padding) are dropped (50 Hz)"


def test_whisper_last_window_ends_at_the_audio_end():
    b = build_backbone("whisper:tiny")
    seen = []
    forward = b._forward
    b._forward = lambda x: (seen.append(x.copy()), forward(x))[1]
    wav = _wav(41.0, seed=3)
    feats, valid = b.embed_audio(wav, np.arange(0, 41.5, 0.5), "centered")
    windows = np.concatenate(seen)
    assert windows.shape == (2, 30 * SR), "41 s: two 30 s windows"
    np.testing.assert_array_equal(windows[-1], wav[-30 * SR:])  # no silence padding: it ends with the audio
    assert valid[:83].all() and not valid[83:].any()


def test_dinov2_round_trip_with_its_processor(tmp_path):
    from PIL import Image
    from transformers import BitImageProcessor

    tiny = build_backbone("dinov2:tiny(pool=both)")
    proc = BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56},
                             image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    tiny.model.save_pretrained(tmp_path / "d")
    proc.save_pretrained(tmp_path / "d")
    b = build_backbone(f"dinov2:{tmp_path / 'd'}(pool=both)")
    assert b.fingerprint()["weights_sha256"] == tiny.fingerprint()["weights_sha256"]
    pre = b.fingerprint()["preprocessing"]
    assert (pre["resize_shortest_edge"], pre["crop"], pre["resample"], b.input_size, b.dim) == (64, 56, "bicubic", 56, 64)
    faces = _faces(3, 112, seed=2)
    ours = b.preprocess(faces)
    ref = proc([Image.fromarray(f) for f in faces], return_tensors="pt")["pixel_values"]
    assert ours.shape == ref.shape and (ours - ref).abs().mean() < 0.02, "the checkpoint's processor settings"
    e = b.embed(ours)
    with torch.no_grad():
        h = tiny.model(pixel_values=ours).last_hidden_state
    torch.testing.assert_close(e, torch.cat([h[:, 0], h[:, 1:].mean(1)], 1), atol=1e-5, rtol=1e-4)
    cls = build_backbone(f"dinov2:{tmp_path / 'd'}").embed(ours)
    torch.testing.assert_close(cls, e[:, :32])


def test_timm_state_dict_loads_and_a_pickled_model_is_refused(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=7).eval()
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "wrapped.pth")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(net, tmp_path / "whole.pt")
    faces = _faces(2, 96)
    outs = []
    for f in ("wrapped.pth", "w.safetensors"):
        b = build_backbone(f"timm:test_efficientnet/{tmp_path / f}(logits=true)")
        assert (b.dim, b.n_logits, b.input_size) == (net.num_features + 7, 7, 160)
        outs.append(b.embed(b.preprocess(faces)))
    torch.testing.assert_close(outs[0], outs[1])
    with torch.no_grad():
        torch.testing.assert_close(outs[0][:, -7:], net(b.preprocess(faces)), atol=1e-4, rtol=1e-4)
    spec = f"timm:test_efficientnet/{tmp_path / 'whole.pt'}"
    with pytest.raises(BackboneError, match="pickled whole model") as e:
        build_backbone(spec)
    msg = str(e.value)
    assert msg.startswith(spec + ":") and "\n" not in msg and "state_dict()" in msg
    with pytest.raises(BackboneError, match="do not fit|size mismatch|Missing|Unexpected") as e:
        build_backbone(f"timm:test_convnext/{tmp_path / 'w.safetensors'}")
    assert "\n" not in str(e.value)


def test_unreachable_hub_is_one_line_and_no_network(monkeypatch, capfd):
    from affcli.pipeline.backbones import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: False)
    for spec in ("wavlm:microsoft/wavlm-large", "whisper:openai/whisper-small(layer=6)", "dinov2:facebook/dinov2-large",
                 "clip:ViT-B-16/openai"):
        with pytest.raises(BackboneError, match="no network was reached") as e:
            build_backbone(spec)
        assert str(e.value).startswith(spec + ":") and "\n" not in str(e.value)
    err = capfd.readouterr().err
    assert "Retrying" not in err and "thrown while requesting" not in err


def test_opensmile_pitch_of_two_tones():
    b = build_backbone("opensmile:eGeMAPSv02")
    assert (b.dim, b.modality) == (50, "audio")
    i = b.names.index("F0semitoneFrom27.5Hz_sma3nz_mean")
    ts = np.arange(0.6, 1.4, 1 / 30)
    lo, _ = b.embed_audio(_tone(320.0), ts, "centered")
    hi, _ = b.embed_audio(_tone(760.0), ts, "centered")
    assert np.allclose(lo[:, i], 12 * np.log2(320 / 27.5), atol=0.05)
    np.testing.assert_allclose(hi[:, i] - lo[:, i], 12 * np.log2(760 / 320), atol=0.05)  # 14.98 semitones
    assert np.abs(hi[:, b.names.index("F0semitoneFrom27.5Hz_sma3nz_std")]).max() < 0.05
    again, _ = build_backbone("opensmile:eGeMAPSv02").embed_audio(_tone(320.0), ts, "centered")
    np.testing.assert_array_equal(again, lo)  # deterministic
    assert b.fingerprint()["preprocessing"]["scaled"] == {}, "eGeMAPS keeps every unit"
    compare = build_backbone("opensmile:ComParE_2016")
    scaled = compare.fingerprint()["preprocessing"]["scaled"]
    assert set(scaled) == {"pcm_fftMag_spectralVariance_sma_mean", "pcm_fftMag_spectralVariance_sma_std"}
    noise = np.random.default_rng(5).uniform(-1, 1, 2 * SR).astype(np.float32)
    f, _ = compare.embed_audio(noise, ts, "centered")
    assert np.isfinite(f.astype(np.float16)).all(), "full-scale noise fits the cache's float16"


@pytest.mark.parametrize("spec", ["opensmile:eGeMAPSv02(window=0.5)", "vad:silero"])
def test_causal_audio_features_never_look_ahead(spec):
    b = build_backbone(spec)
    wav = _wav(3.0, seed=1) + _tone(200.0, 3.0)
    ts = np.arange(0, 3.0, 1 / 30)
    f0, v0 = b.embed_audio(wav, ts, "causal")
    for cut in (1.0, 1.7, 2.3):
        other = wav.copy()
        other[int(cut * SR):] = _wav(3.0, seed=9)[int(cut * SR):] * 3
        f1, v1 = b.embed_audio(other, ts, "causal")
        past = ts <= cut
        np.testing.assert_array_equal(v0[past], v1[past])
        np.testing.assert_array_equal(f0[past], f1[past])
        assert np.abs(f0[~past & v0] - f1[~past & v0]).max() > 0, "the perturbation is visible after t"


def test_opensmile_functionals_where_the_window_fits():
    b = build_backbone("opensmile:eGeMAPSv02(summary=functionals, window=1.0, hop=0.25)")
    assert b.dim == 88
    f, v = b.embed_audio(_tone(320.0, 3.0), np.arange(0, 3.0, 0.1), "centered")
    assert v.all() and np.isfinite(f).all()
    short, sv = b.embed_audio(_tone(320.0, 0.5), np.arange(0, 0.5, 0.1), "centered")
    assert not sv.any(), "no whole window fits in 0.5 s: no functionals, frames invalid"


def test_silero_vad_equals_the_packaged_model():
    from affcli.pipeline.backbones.vad import JIT_MEMBER, package_file

    b = build_backbone("vad:silero")
    assert (b.dim, b.modality) == (1, "audio")
    rng = np.random.default_rng(0)
    t = np.arange(int(3.3 * SR)) / SR
    wav = (0.3 * np.sin(2 * np.pi * 180 * t) * ((t > 1) & (t < 2.2)) + 0.01 * rng.standard_normal(len(t)))
    wav = wav.astype(np.float32)
    ours = b.probabilities(wav)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jit = torch.jit.load(str(package_file(*JIT_MEMBER)))
    jit.reset_states()
    x = torch.from_numpy(np.pad(wav, (0, (-len(wav)) % 512)))
    with torch.no_grad():
        ref = np.array([float(jit(x[i:i + 512][None], SR)) for i in range(0, len(x), 512)])
    assert len(ours) == len(ref) == 104
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    import sys

    assert "silero_vad" not in sys.modules, "the package (which sets torch to one thread) is never imported"
