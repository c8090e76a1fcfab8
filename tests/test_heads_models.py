"""Windows, temporal heads, fusions, task heads: shapes, video boundaries, padding and causality."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from affcli.heads.config import RunConfig
from affcli.heads.fusion import FUSION, group_features
from affcli.heads.config import ModelSpec
from affcli.heads.model.head import HeadModel
from affcli.heads.spec import SpecError, parse_loss, parse_part
from affcli.heads.tasks import TASKS
from affcli.heads.temporal import TEMPORAL
from affcli.heads.data.windows import frame_windows, gather, make_windows, sample_batches

torch.set_num_threads(1)


def test_windows_never_cross_videos_and_pad_at_ends():
    starts, lengths = np.array([0, 10, 13]), np.array([10, 3, 25])
    w = make_windows(starts, lengths, 8, 4)
    for i in range(len(w)):
        v = int(w.video[i])
        lo, hi = starts[v], starts[v] + lengths[v]
        assert ((w.idx[i] >= lo) & (w.idx[i] < hi)).all()
    covered = torch.zeros(38, dtype=torch.long)
    covered.index_add_(0, w.idx[w.real], torch.ones(int(w.real.sum()), dtype=torch.long))
    assert (covered > 0).all()
    short = w.video == 1
    assert short.sum() == 1 and w.real[short].sum() == 3 and not w.real[short][0, 3:].any()
    e = make_windows(starts, lengths, 8, 4, align="end")
    assert e.real[:, -1].all()
    ends = e.idx[:, -1]
    assert set((starts + lengths - 1).tolist()) <= set(ends.tolist())
    f = frame_windows(starts, lengths, 5)
    assert len(f) == 38 and sorted(f.idx[:, -1].tolist()) == list(range(38))
    assert not f.real[f.idx[:, -1] == 0][0, :-1].any()


def test_sample_batches_is_seeded_and_complete():
    a = torch.cat(list(sample_batches(50, 8, torch.Generator().manual_seed(3), "cpu")))
    b = torch.cat(list(sample_batches(50, 8, torch.Generator().manual_seed(3), "cpu")))
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(50))


def test_gather_zeroes_invalid_and_padding():
    feats = {"visual": torch.arange(20, dtype=torch.float32).view(10, 2) + 1}
    valid = {"visual": torch.tensor([True] * 4 + [False] + [True] * 5)}
    w = make_windows(np.array([0]), np.array([10]), 6, 6)
    xs, vs = gather(feats, valid, w, torch.arange(len(w)))
    assert xs["visual"].shape == (2, 6, 2)
    assert (xs["visual"][0, 4] == 0).all() and not vs["visual"][0, 4]
    assert (xs["visual"][1, 4:] == 0).all() and not vs["visual"][1, 4:].any()


def test_features_grouped_by_recorded_modality_not_kind_name():
    rec = {"clip:a": "audio", "made-up:b": "visual", "fer:c": "visual"}
    assert group_features(["clip:a", "made-up:b", "fer:c"], rec) == {"audio": ["clip:a"], "visual": ["made-up:b", "fer:c"]}
    with pytest.raises(ValueError, match="set-modality"):
        group_features(["resnet:x"], rec)


def _inputs(B=2, W=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = {"visual": torch.randn(B, W, 6, generator=g), "audio": torch.randn(B, W, 5, generator=g)}
    return xs, {m: torch.ones(B, W, dtype=torch.bool) for m in xs}


CAUSAL = [("tcn", "none:visual"), ("transformer", "none:visual"), ("gru", "none:audio"), ("mlp", "concat"),
          ("tcn", "xattn"), ("transformer", "xattn-gated"), ("gru", "xattn")]


@pytest.mark.parametrize("temporal,fusion", CAUSAL)
def test_causal_outputs_ignore_the_future(temporal, fusion):
    torch.manual_seed(0)
    spec = ModelSpec(temporal=temporal, fusion=fusion, d_model=16, causal=True,
                     temporal_options={"levels": 2} if temporal == "tcn" else {})
    m = HeadModel(spec, "mtl", {"visual": 6, "audio": 5}).eval()
    assert m.causal
    xs, vs = _inputs()
    t = 6
    xs2 = {k: v.clone() for k, v in xs.items()}
    for v in xs2.values():
        v[:, t + 1:] = torch.randn_like(v[:, t + 1:]) * 5
    vs2 = {k: v.clone() for k, v in vs.items()}
    vs2["audio"][:, t + 3] = False
    with torch.no_grad():
        a, b = m(xs, vs), m(xs2, vs2)
    for k in ("expr", "va", "au"):
        assert torch.allclose(a[k][:, : t + 1], b[k][:, : t + 1], atol=1e-6)
        assert not torch.allclose(a[k][:, t + 1:], b[k][:, t + 1:])


@pytest.mark.parametrize("temporal,fusion", [("tcn", "none:visual"), ("transformer", "none:visual"), ("tcn", "xattn")])
def test_non_causal_heads_do_see_the_future(temporal, fusion):
    torch.manual_seed(0)
    m = HeadModel(ModelSpec(temporal=temporal, fusion=fusion, d_model=16), "expr", {"visual": 6, "audio": 5}).eval()
    xs, vs = _inputs()
    xs2 = {k: v.clone() for k, v in xs.items()}
    for v in xs2.values():
        v[:, 7:] += 3
    with torch.no_grad():
        assert not torch.allclose(m(xs, vs)["expr"][:, :7], m(xs2, vs)["expr"][:, :7])


def test_causal_first_frame_with_all_past_keys_invalid():
    m = HeadModel(ModelSpec(temporal="transformer", fusion="xattn", d_model=16, causal=True), "expr",
                  {"visual": 6, "audio": 5}).eval()
    xs, vs = _inputs()
    vs["audio"][:, :3] = False
    xs2 = {k: v.clone() for k, v in xs.items()}
    xs2["audio"][:, 3:] += 4
    with torch.no_grad():
        a, b = m(xs, vs)["expr"], m(xs2, vs)["expr"]
    assert torch.isfinite(a).all() and torch.allclose(a[:, :3], b[:, :3], atol=1e-6)


def test_bidirectional_gru_is_refused_when_causal():
    with pytest.raises(ValueError, match="bidirectional"):
        HeadModel(ModelSpec(temporal="gru", temporal_options={"bidirectional": True}, fusion="none", causal=True),
                  "expr", {"visual": 6})


@pytest.mark.parametrize("task", TASKS.names())
def test_task_heads_shapes_and_ranges(task):
    m = HeadModel(ModelSpec(temporal="mlp", fusion="concat", d_model=8), task, {"visual": 6, "audio": 5}).eval()
    xs, vs = _inputs()
    out = m(xs, vs)
    dims = {k: v.shape[-1] for k, v in out.items() if k != "feat"}
    assert dims == {"expr": {"expr": 8}, "va": {"va": 2}, "au": {"au": 12}, "lsd": {"lsd": 6},
                    "mtl": {"expr": 8, "va": 2, "au": 12}}[task]
    if "va" in out:
        assert out["va"].abs().max() <= 1


def test_last_position_gives_one_output_per_window():
    m = HeadModel(ModelSpec(temporal="tcn", fusion="none", d_model=8, label_position="last", pool="mean"), "expr",
                  {"visual": 6}).eval()
    xs, vs = _inputs()
    assert m({"visual": xs["visual"]}, {"visual": vs["visual"]})["expr"].shape == (2, 8)


def test_bad_names_and_options_are_refused():
    with pytest.raises(KeyError, match="valid temporal head names: gru, mlp, tcn, transformer"):
        HeadModel(ModelSpec(temporal="lstm", fusion="none"), "expr", {"visual": 6})
    with pytest.raises(ValueError, match="takes no option 'depth'"):
        HeadModel(ModelSpec(temporal="tcn(depth=3)", fusion="none"), "expr", {"visual": 6})
    with pytest.raises(ValueError, match="needs visual and audio"):
        HeadModel(ModelSpec(temporal="tcn", fusion="xattn"), "expr", {"visual": 6})
    assert {"mlp", "tcn", "gru", "transformer"} == set(TEMPORAL.names())
    assert {"none", "concat", "xattn", "xattn-gated"} == set(FUSION.names())


def test_spec_parsing():
    p = parse_part("tcn(levels=6, channels=512, causal=true)")
    assert p.name == "tcn" and p.opts == {"levels": 6, "channels": 512, "causal": True}
    assert parse_part("none:visual").arg == "visual"
    terms = parse_loss("ccc+0.2*soft-prompt(sigma=0.45)+1e-1*mse")
    assert [(w, t.name) for w, t in terms] == [(1.0, "ccc"), (0.2, "soft-prompt"), (0.1, "mse")]
    assert terms[1][1].opts == {"sigma": 0.45}
    with pytest.raises(SpecError):
        parse_part("tcn(levels)")


def test_run_config_round_trip_and_refusals(tmp_path):
    cfg = RunConfig(task="va", features=["clip:tiny"], model=ModelSpec(temporal="gru", temporal_options={"hidden": 32}))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown run-config key 'epoch'"):
        RunConfig.from_dict({"epoch": 3})
    p = tmp_path / "run.toml"
    p.write_text('task = "au"\nfeatures = ["clip:tiny"]\nepochs = 2\n[temporal_options]\nlevels = 2\n')
    got = RunConfig.load(p, epochs=5, lr=None)
    assert got.task == "au" and got.epochs == 5 and got.model.temporal_options == {"levels": 2} and got.lr == 1e-3
    with pytest.raises(ValueError, match="label_position"):
        RunConfig(model=ModelSpec(label_position="middle")).validate()


def test_dilated_shifted_windows_see_only_the_past():
    w = make_windows(np.array([0, 50]), np.array([50, 40]), 3, 7, "end", dilation=10, horizon=10)
    for i in range(len(w)):
        t = int(w.target[i])
        real_rows = w.idx[i][w.real[i]]
        assert (real_rows <= t - 10).all() and ((t - real_rows) % 10 == 0).all()
    assert int(w.target[0]) == 49 and w.idx[0].tolist() == [19, 29, 39]
    with pytest.raises(ValueError, match="label_position=last"):
        make_windows(np.array([0]), np.array([10]), 3, 1, "start", dilation=2)


RECIPES = sorted((__import__("pathlib").Path(__file__).parents[1] / "heads" / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_seed_recipes_build_model_and_loss(path):
    from types import SimpleNamespace

    from affcli.heads.losses import LossContext, build_loss
    from affcli.heads.train.trainer import build_model
    from affcli.pipeline.backbones import BACKBONES, parse_spec

    cfg = RunConfig.load(path)
    dims = {BACKBONES.get(parse_spec(f)[0]).modality: 24 for f in cfg.features}
    model = build_model(cfg, SimpleNamespace(in_dims=dims, modalities=dims))
    g = torch.Generator().manual_seed(0)
    ctx = LossContext(cfg.task, model.feat_dim, {}, {"expr8": torch.randn(8, 16, generator=g), "va9": torch.randn(27, 16, generator=g)},
                      teacher=lambda run: {"expr": torch.full((50, 8), 1 / 8)})
    loss = build_loss(cfg.loss.replace("weights=auto", "weights=None").replace("pos_weight=auto", "pos_weight=None")
                      .replace("alpha=auto", "alpha=None"), ctx)
    W = min(cfg.window, 12)
    xs = {m: torch.randn(2, W, d, generator=g) for m, d in dims.items()}
    vs = {m: torch.ones(2, W, dtype=torch.bool) for m in dims}
    out = model(xs, vs, torch.ones(2, W, dtype=torch.bool))
    shape = (2,) if cfg.model.label_position == "last" else (2, W)
    y = {"expr": torch.zeros(shape, dtype=torch.long), "mask_expr": torch.ones(shape, dtype=torch.bool),
         "va": torch.zeros(*shape, 2), "mask_va": torch.ones(shape, dtype=torch.bool),
         "au": torch.zeros(*shape, 12, dtype=torch.long), "mask_au": torch.ones(shape, dtype=torch.bool),
         "_idx": torch.zeros(shape, dtype=torch.long), "_real": torch.ones(shape, dtype=torch.bool)}
    total, _ = loss(out, y)
    total.backward()
    assert torch.isfinite(total)


def test_smoothing_stays_inside_each_video():
    from affcli.heads.infer.postprocess import smooth_rows

    x = torch.tensor([[0.0], [0.0], [3.0], [10.0], [10.0]])
    out = smooth_rows({"va": x}, np.array([3, 2]), 1)["va"][:, 0].tolist()
    assert out == pytest.approx([0.0, 1.0, 1.5, 10.0, 10.0])


def _twin(spec: ModelSpec, model: HeadModel, **changes) -> HeadModel:
    """A model of the same task, inputs and weights whose spec differs only in `changes`."""
    other = HeadModel(dataclasses.replace(spec, **changes), model.task, model.in_dims).eval()
    other.load_state_dict(model.state_dict())
    return other


def test_pool_mean_is_the_time_mean_and_last_the_last_frame():
    torch.manual_seed(0)
    spec = ModelSpec(temporal="tcn", fusion="xattn", d_model=16, label_position="last", pool="mean",
                     temporal_options={"levels": 2})
    mean = HeadModel(spec, "va", {"visual": 6, "audio": 5}).eval()
    last, frame = _twin(spec, mean, pool="last"), _twin(spec, mean, label_position="frame")
    xs, vs = _inputs(W=10)
    real = torch.ones(2, 10, dtype=torch.bool)
    real[1, 6:] = False
    with torch.no_grad():
        fused = mean.fusion(mean.sequence(xs, vs), vs)
        want_mean = torch.stack([mean.head(fused[0].mean(0, keepdim=True))["va"][0],
                                 mean.head(fused[1, :6].mean(0, keepdim=True))["va"][0]])
        got_mean, got_last = mean(xs, vs, real)["va"], last(xs, vs, real)["va"]
        per_frame = frame(xs, vs)["va"]
    assert torch.allclose(got_mean, want_mean, atol=1e-5)
    assert torch.allclose(got_last, per_frame[:, -1], atol=1e-5)
    assert (got_mean - got_last).abs().max() > 1e-3


@pytest.mark.parametrize("temporal,fusion", [("tcn", "none:visual"), ("transformer", "xattn"), ("gru", "xattn-gated")])
def test_causal_last_position_equals_the_per_frame_output_on_the_window_up_to_it(temporal, fusion):
    torch.manual_seed(0)
    spec = ModelSpec(temporal=temporal, fusion=fusion, d_model=16, causal=True, label_position="last",
                     temporal_options={"levels": 2} if temporal == "tcn" else {})
    last = HeadModel(spec, "expr", {"visual": 6, "audio": 5}).eval()
    frame = _twin(spec, last, label_position="frame")
    xs, vs = _inputs(W=12)
    with torch.no_grad():
        per_frame = frame(xs, vs)["expr"]
        for t in (4, 8, 11):
            window = {m: x[:, : t + 1] for m, x in xs.items()}
            got = last(window, {m: v[:, : t + 1] for m, v in vs.items()})["expr"]
            assert torch.allclose(got, per_frame[:, t], atol=1e-5), t
        assert not torch.allclose(per_frame[:, 4], per_frame[:, 11])
