"""Seeded fault injection over every file a feature cache, a run folder and its prediction files can hold.

Each case copies pristine artefacts, damages one file (junk bytes, a truncation or flipped bits, from a seeded
generator) and runs the commands that read it, in-process through the CLI (`affcli.cli.app`), each under a time
limit. Every probe must end in a correct result (the pristine answer, or the damage reported: a one-line error, or
`cache verify` listing problems), never a traceback, a hang or a silently different answer. Counts per target and
damage go to a table (stdout) and a JSON file.

    python bench/fuzz.py --seed 0 --out bench/results/fuzz.json       # every file x 3 damages x --rounds
    python bench/fuzz.py --quick                                        # one case per target (the test suite's)

Adding files of another kind (the point clouds' .xyz/.ply/.npy/.h5, say) is one `register_target(Target(...))`:
`build(root)` writes its pristine files under root (once), `files(root)` lists the files to damage, `probes` the
commands that read them (each a `Probe(name, run)` whose `run(root) -> Answer`). See the targets below.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PROBE_SECONDS = 60
OUTCOMES = ("same", "valid input", "reported", "traceback", "hang", "wrong")
"""same: the pristine answer; valid input: a damaged interchange file (ABAW predictions, which anyone may write)
that is still a valid file, answered as given; reported: refused in one line (exit 1/2), a warning line naming what was
left out, or, for `cache verify`, problems listed; traceback: an exception escaped or several error lines; hang: past PROBE_SECONDS; wrong: exit 0
with another answer than the pristine one (silently wrong)."""


# ---- damage ------------------------------------------------------------------------------------------------------

def junk(data: bytes, rng: np.random.Generator) -> bytes:
    """Random bytes of a random length (up to twice the original, at least one byte)."""
    return rng.integers(0, 256, int(rng.integers(1, 2 * len(data) + 2)), dtype=np.uint8).tobytes()


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    """The file cut at a random point (possibly empty)."""
    return data[: int(rng.integers(0, max(1, len(data))))]


def bitflip(data: bytes, rng: np.random.Generator) -> bytes:
    """1-4 random bits flipped."""
    b = bytearray(data)
    if not b:
        return b"\x00"
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(b)


DAMAGES: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {"junk": junk, "truncate": truncate,
                                                                      "bitflip": bitflip}


# ---- probes: a CLI command run in-process, its answer normalised --------------------------------------------------

@dataclass
class Answer:
    """What a command gave: its exit code, its output lines (warnings apart), a digest of what it produced."""

    code: int
    lines: list[str]
    digest: str | None = None
    escaped: str | None = None  # an exception that left the command
    warnings: list[str] = field(default_factory=list)


@dataclass
class Probe:
    """A command that reads the damaged files: `run(root)` runs it on the artefacts under root."""

    name: str
    run: Callable[[Path], Answer]
    verifier: bool = False  # `cache verify`: exit 1 with problem lines is its report
    interchange: bool = False  # reads files users write by hand: a still-valid damaged file is valid input


@dataclass
class Target:
    """A kind of artefact: how to build it pristine, which of its files to damage, which commands read them."""

    name: str
    build: Callable[[Path], None]
    files: Callable[[Path], list[Path]]
    probes: list[Probe] = field(default_factory=list)


TARGETS: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    """Add a target (the extension point: e.g. the point-cloud files)."""
    TARGETS[target.name] = target
    return target


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def on_alarm(*_):
        raise Hang()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cli(args: list[str], digest: Callable[[], str | None] = lambda: None) -> Answer:
    """Run `affcli ARGS` in-process; the answer with the digest of what it wrote when it succeeded."""
    from typer.testing import CliRunner

    from affcli.cli import app

    try:
        with time_limit(PROBE_SECONDS):
            r = CliRunner().invoke(app, args)
    except Hang:
        return Answer(-1, [], escaped="hang")
    lines = [line for line in r.output.splitlines() if line.strip() and not line.startswith("warning:")]
    warned = [line for line in r.output.splitlines() if line.startswith("warning:")]
    if isinstance(r.exception, Hang):
        return Answer(-1, lines, escaped="hang")
    escaped = None
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        escaped = f"{type(r.exception).__name__}: {' '.join(str(r.exception).split())[:160]}"
    if any("Traceback" in line for line in lines):
        escaped = escaped or "traceback printed"
    return Answer(r.exit_code, lines, digest() if r.exit_code == 0 and escaped is None else None, escaped, warned)


def file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes() if p.is_file() else b"<missing>")
    return h.hexdigest()[:16]


def classify(probe: Probe, got: Answer, pristine: Answer) -> str:
    """One of OUTCOMES for a probe's answer on damaged artefacts against its pristine answer."""
    if got.escaped == "hang":
        return "hang"
    if got.escaped is not None or got.code not in (0, 1, 2):
        return "traceback"
    if got.code == 0:
        if probe.verifier:
            return "same" if got.lines == pristine.lines else "wrong"
        if got.digest == pristine.digest:
            return "same"
        if probe.interchange:
            return "valid input"
        return "reported" if len(got.warnings) > len(pristine.warnings) else "wrong"
    if probe.verifier and got.code == 1:
        ok = all(line.startswith(("problem:", "note:", "rebuilt")) for line in got.lines)
        return "reported" if ok and got.lines else "traceback"
    return "reported" if len(got.lines) == 1 else "traceback"


# ---- the heads artefacts: a cache, a trained run, its prediction files ------------------------------------------

VISUAL = "clip:synth"


FACES = "clip:faces"


def build_heads(root: Path) -> None:
    """A small synthetic cache (2 feature sets, 4 videos, 2 prompt sets), a run trained on it, its predictions, the
    run's teacher targets in the cache, and a third set of 2 videos with a face record, row paths and stored views."""
    from typer.testing import CliRunner

    from affcli.cache.fingerprint import make_fingerprint
    from affcli.cache.rows import row_extras
    from affcli.cache.store import FaceRecord, FeatureStore
    from affcli.cli import app
    from affcli.synthetic.features import make_synthetic

    make_synthetic(root / "s", n_videos=4, n_frames=30, dims=(8, 8))
    cache = str(root / "s" / "cache.zarr")
    r = CliRunner().invoke(app, ["train-head", "--cache", cache, "--labels", str(root / "s" / "labels"), "--epochs", "1",
                                 "--d-model", "8", "--window", "8", "--device", "cpu", "--no-plots",
                                 "--out", str(root / "run")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["predict", "--run", str(root / "run"), "--out", str(root / "preds")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["cache", "teacher", cache, "--run", str(root / "run")])
    assert r.exit_code == 0, r.output
    store = FeatureStore(cache)
    store.ensure_feature_set(FACES, make_fingerprint(FACES, "visual", 8, "synthetic"))
    rng = np.random.default_rng(0)
    for v in ("video000", "video001"):
        n = 30
        box = np.tile(np.array([[10, 12, 50, 60]], np.float32), (n, 1)) + rng.normal(size=(n, 4)).astype(np.float32)
        faces = FaceRecord(box, rng.random(n).astype(np.float32), rng.normal(20, 5, (n, 5, 2)).astype(np.float32),
                           {"detector": "synthetic"})
        store.write_video(FACES, v, rng.normal(size=(n, 8)).astype(np.float32), np.ones(n, bool), np.arange(n) / 30,
                          30.0, f"{v}.mp4", faces=faces,
                          extras=row_extras([f"{v}/{i:05d}.jpg" for i in range(n)],
                                            rng.normal(size=(2, n, 8)).astype(np.float32)))
    store.write_manifest()


def _cache(root: Path) -> Path:
    return root / "s" / "cache.zarr"


def probe_verify(root: Path) -> Answer:
    return cli(["cache", "verify", str(_cache(root))])


def probe_predict(root: Path) -> Answer:
    out = root / "p_out"
    shutil.rmtree(out, ignore_errors=True)
    return cli(["predict", "--run", str(root / "run"), "--out", str(out), "--cache", str(_cache(root))],
               lambda: file_digest(out / "predictions_expr.txt"))


def probe_evaluate(root: Path) -> Answer:
    a = cli(["evaluate", "--run", str(root / "run"), "--cache", str(_cache(root)), "--labels",
             str(root / "s" / "labels")])
    if a.code == 0 and a.escaped is None:
        a.digest = hashlib.sha256("\n".join(a.lines).encode()).hexdigest()[:16]
    return a


def probe_train_text(root: Path) -> Answer:
    out = root / f"t_{time.monotonic_ns()}"
    return cli(["train-head", "--cache", str(_cache(root)), "--labels", str(root / "s" / "labels"), "--epochs", "1",
                "--d-model", "8", "--window", "8", "--device", "cpu", "--no-plots", "--no-save-predictions",
                "-f", VISUAL, "--loss", "ce+0.1*text-contrastive(prompts=expr8)", "--out", str(out)],
               lambda: file_digest(out / "model.safetensors"))


def probe_score(root: Path) -> Answer:
    a = cli(["score", "--task", "expr", "--pred", str(root / "preds" / "predictions_expr.txt"), "--labels",
             str(root / "s" / "labels"), "--split", "val"])
    if a.code == 0 and a.escaped is None:
        a.digest = hashlib.sha256("\n".join(a.lines).encode()).hexdigest()[:16]
    return a


def probe_faces(root: Path) -> Answer:
    a = cli(["cache", "faces", str(_cache(root)), "video001", "--feature-set", FACES, "--frames", "0,7,29"])
    if a.code == 0 and a.escaped is None:
        a.digest = hashlib.sha256("\n".join(a.lines).encode()).hexdigest()[:16]
    return a


def probe_pretrain_views(root: Path) -> Answer:
    out = root / f"pre_{time.monotonic_ns()}"
    return cli(["pretrain", "--cache", str(_cache(root)), "-f", FACES, "--epochs", "1", "--window", "8",
                "--d-model", "8", "--batch-size", "16", "--device", "cpu", "--out", str(out)],
               lambda: file_digest(out / "encoder.safetensors"))


def probe_distill(root: Path) -> Answer:
    out = root / f"d_{time.monotonic_ns()}"
    return cli(["train-head", "--cache", str(_cache(root)), "--labels", str(root / "s" / "labels"), "--epochs", "1",
                "--d-model", "8", "--window", "8", "--device", "cpu", "--no-plots", "--no-save-predictions",
                "-f", VISUAL, "-f", "wav2vec2:synth", "--distill-from", str(root / "run"), "--out", str(out)],
               lambda: file_digest(out / "model.safetensors"))


def _files_under(base: Path, keep: Callable[[Path], bool]) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.is_file() and keep(p))


VERIFY = Probe("cache verify", probe_verify, verifier=True)
OWN = ("_text", "_leases", "teacher", "clip_faces")
register_target(Target(
    "cache", build_heads,
    lambda root: _files_under(_cache(root), lambda p: not set(OWN) & set(p.relative_to(_cache(root)).parts)),
    [VERIFY, Probe("predict", probe_predict)]))
register_target(Target(
    "face records, row extras", build_heads,
    lambda root: _files_under(_cache(root) / "clip_faces", lambda p: True),
    [VERIFY, Probe("cache faces", probe_faces), Probe("pretrain (views)", probe_pretrain_views)]))
register_target(Target(
    "teacher targets", build_heads,
    lambda root: _files_under(_cache(root) / "teacher", lambda p: True),
    [VERIFY, Probe("train-head (distill)", probe_distill)]))
register_target(Target(
    "prompt embeddings", build_heads,
    lambda root: _files_under(_cache(root) / "_text", lambda p: True),
    [VERIFY, Probe("train-head (text loss)", probe_train_text)]))
register_target(Target(
    "run folder", build_heads,
    lambda root: [root / "run" / n for n in ("config.json", "metrics.json", "model.safetensors",
                                             "predictions_val.parquet", "checksums.json")],
    [Probe("predict", probe_predict), Probe("evaluate", probe_evaluate)]))
register_target(Target(
    "prediction files", build_heads,
    lambda root: [root / "preds" / "predictions_expr.txt", root / "preds" / "predictions_expr.parquet"],
    [Probe("score", probe_score, interchange=True)]))


# ---- the point-cloud artefacts: input clouds, a training HDF5, a pc train run folder, a mesh -------------------

def build_pc(root: Path) -> None:
    """A 400-point sphere as .xyz/.ply/.npy/KITTI .bin, a tiny PU-GAN-format HDF5, a one-epoch pu-net run trained on
    it, and a small test folder (input_2048-style layout) with an OFF mesh for P2F."""
    from typer.testing import CliRunner

    import h5py

    from affcli.cli import app
    from affcli.pointcloud.io import write_cloud, write_mesh

    rng = np.random.default_rng(0)
    pts = rng.normal(size=(400, 3))
    pts = (pts / np.linalg.norm(pts, axis=1, keepdims=True)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    write_cloud(root / "cloud.xyz", pts)
    write_cloud(root / "cloud.ply", pts)
    write_cloud(root / "cloud.npy", pts)
    np.concatenate([pts, np.ones((len(pts), 1), np.float32)], 1).astype("<f4").tofile(root / "cloud.bin")
    gt = rng.normal(size=(4, 256, 3))
    gt = (gt / np.linalg.norm(gt, axis=2, keepdims=True)).astype(np.float32)
    for h5 in (root / "train.h5", _pc_run_data(root)):
        with h5py.File(h5, "w") as fh:
            fh["poisson_256"], fh["poisson_1024"] = gt[:, :64], gt
            fh["mesh_index"] = np.arange(4)
    r = CliRunner().invoke(app, ["pc", "train", "--data", str(_pc_run_data(root)), "--out", str(root / "run"),
                                 "--model", "pu-net", "--epochs", "1", "--batch-size", "4", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    test = root / "test"
    n = 64
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    verts = np.concatenate([np.stack([np.cos(t), np.sin(t), np.full(12, z)], 1) for z in (-1.0, 1.0)])
    faces = [[i, (i + 1) % 12, 12 + i] for i in range(12)] + [[(i + 1) % 12, 12 + (i + 1) % 12, 12 + i] for i in range(12)]
    write_mesh(root / "mesh.off", verts, np.array(faces))
    (test / "meshes").mkdir(parents=True)
    shutil.copy(root / "mesh.off", test / "meshes" / "tube.off")
    ang = rng.random(4 * n) * 2 * np.pi
    tube = np.stack([np.cos(ang), np.sin(ang), rng.uniform(-1, 1, 4 * n)], 1).astype(np.float32)
    write_cloud(test / "input_64" / "tube.xyz", tube[:n])
    write_cloud(test / "gt_256" / "tube.xyz", tube)


def _pc_run_data(root: Path) -> Path:
    """The run's training file, beside the artefact folders (a run resumes only on the same data path)."""
    return root.parent / "pc_run_train.h5"


def _pc_digest(a: Answer, *paths: Path) -> Answer:
    if a.code == 0 and a.escaped is None:
        a.digest = file_digest(*paths)
    return a


def probe_pc_upsample(ext: str) -> Callable[[Path], Answer]:
    def run(root: Path) -> Answer:
        out = root / f"up_{ext}.npy"
        out.unlink(missing_ok=True)
        return cli(["pc", "upsample", str(root / f"cloud.{ext}"), "--out", str(out), "--device", "cpu"],
                   lambda: file_digest(out))
    return run


def probe_pc_upsample_run(root: Path) -> Answer:
    out = root / "up_run.npy"
    out.unlink(missing_ok=True)
    return cli(["pc", "upsample", str(root / "cloud.npy"), "--run", str(root / "run"), "--out", str(out),
                "--device", "cpu"], lambda: file_digest(out))


def probe_pc_train(root: Path) -> Answer:
    out = root / f"pct_{time.monotonic_ns()}"
    return cli(["pc", "train", "--data", str(root / "train.h5"), "--out", str(out), "--model", "pu-net", "--epochs",
                "1", "--batch-size", "4", "--device", "cpu", "--val-every", "2"],
               lambda: file_digest(out / "model.safetensors"))


def probe_pc_resume(root: Path) -> Answer:
    return cli(["pc", "train", "--data", str(_pc_run_data(root)), "--out", str(root / "run"), "--model", "pu-net",
                "--epochs", "2", "--batch-size", "4", "--device", "cpu"],
               lambda: file_digest(root / "run" / "model.safetensors"))


def probe_pc_metrics(root: Path) -> Answer:
    a = cli(["pc", "metrics", "--pred", str(root / "cloud.xyz"), "--gt", str(root / "cloud.npy"), "--mesh",
             str(root / "mesh.off"), "--device", "cpu"])
    if a.code == 0 and a.escaped is None:
        a.digest = hashlib.sha256("\n".join(a.lines).encode()).hexdigest()[:16]
    return a


def probe_pc_eval(root: Path) -> Answer:
    out = root / "ev"
    shutil.rmtree(out, ignore_errors=True)
    return _pc_digest(cli(["pc", "eval", "--run", str(root / "run"), "--test-dir", str(root / "test"), "--device", "cpu",
                           "--renders", "0", "--allow-overlap", "--out", str(out)]), out / "results.csv")


register_target(Target(
    "pc clouds", build_pc,
    lambda root: [root / f"cloud.{e}" for e in ("xyz", "ply", "npy", "bin")],
    [Probe(f"pc upsample .{e}", probe_pc_upsample(e), interchange=True) for e in ("xyz", "ply", "npy", "bin")]
    + [Probe("pc metrics", probe_pc_metrics, interchange=True)]))
register_target(Target(
    "pc training h5", build_pc, lambda root: [root / "train.h5"],
    [Probe("pc train", probe_pc_train, interchange=True)]))
register_target(Target(
    "pc run folder", build_pc,
    lambda root: [root / "run" / n for n in ("config.json", "metrics.json", "model.safetensors",
                                             "optimizer.safetensors", "checksums.json")],
    [Probe("pc upsample --run", probe_pc_upsample_run), Probe("pc train (resume)", probe_pc_resume)]))
register_target(Target(
    "pc test set, mesh", build_pc,
    lambda root: [root / "mesh.off", root / "test" / "input_64" / "tube.xyz", root / "test" / "gt_256" / "tube.xyz",
                  root / "test" / "meshes" / "tube.off"],
    [Probe("pc metrics", probe_pc_metrics, interchange=True), Probe("pc eval", probe_pc_eval, interchange=True)]))


# ---- the run ---------------------------------------------------------------------------------------------------

@dataclass
class Case:
    target: str
    file: str
    damage: str
    seed: int
    outcomes: dict[str, str]
    details: dict[str, str]


def run(seed: int, rounds: int, quick: bool, only: list[str] | None, log: Callable[[str], None]) -> list[Case]:
    """Every (target, file, damage) `rounds` times with seeds from `seed` (quick: one file per target)."""
    import torch

    torch.set_num_threads(1)
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="affcli-fuzz-") as tmp:
        tmp = Path(tmp)
        built: dict[Callable, Path] = {}
        pristine: dict[tuple[str, str], Answer] = {}
        for name, t in TARGETS.items():
            if only and name not in only:
                continue
            if t.build not in built:
                built[t.build] = tmp / f"pristine{len(built)}"
                t.build(built[t.build])
            root = built[t.build]
            for p in t.probes:
                if (name, p.name) not in pristine:
                    pristine[(name, p.name)] = p.run(_fresh(root, tmp / "work"))
                    assert pristine[(name, p.name)].code == 0, (name, p.name, pristine[(name, p.name)])
            files = [f.relative_to(root) for f in t.files(root)]
            if quick:
                files = files[len(files) // 2:][:1]
            rng = np.random.default_rng(seed)
            kinds = list(DAMAGES.items())
            if quick:  # one case per target, the damage kinds taken in turn
                kinds = [kinds[len(cases) % len(kinds)]]
            for r in range(1 if quick else rounds):
                for rel in files:
                    for dname, damage in kinds:
                        case_seed = int(rng.integers(0, 2**31))
                        work = _fresh(root, tmp / "work")
                        target = work / rel
                        target.write_bytes(damage(target.read_bytes(), np.random.default_rng(case_seed)))
                        outcomes, details = {}, {}
                        for p in t.probes:
                            got = p.run(work)
                            outcomes[p.name] = classify(p, got, pristine[(name, p.name)])
                            if outcomes[p.name] not in ("same",):
                                details[p.name] = got.escaped or (got.lines[0] if got.lines else f"exit {got.code}")
                        cases.append(Case(name, str(rel), dname, case_seed, outcomes, details))
                        bad = [k for k, v in outcomes.items() if v in ("traceback", "hang", "wrong")]
                        log(f"{name:18s} {dname:8s} {str(rel)[:60]:60s} " + " ".join(
                            f"{k}={v}" for k, v in outcomes.items()) + (f"  !! {details.get(bad[0], '')}" if bad else ""))
    return cases


def _fresh(root: Path, work: Path) -> Path:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(root, work, symlinks=True)
    return work


def table(cases: list[Case]) -> tuple[str, dict]:
    """Markdown table: per target and damage, cases and probe outcomes; and the totals."""
    rows: dict[tuple[str, str], Counter] = {}
    for c in cases:
        cnt = rows.setdefault((c.target, c.damage), Counter())
        cnt["cases"] += 1
        cnt.update(c.outcomes.values())
        if all(v in ("same", "valid input", "reported") for v in c.outcomes.values()):
            cnt["case ok"] += 1
    head = ["target", "damage", "cases", "cases ok", *[f"probe {o}" for o in OUTCOMES]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    total = Counter()
    for (t, d), cnt in rows.items():
        total.update(cnt)
        lines.append(f"| {t} | {d} | {cnt['cases']} | {cnt['case ok']} | " + " | ".join(str(cnt[o]) for o in OUTCOMES)
                     + " |")
    lines.append(f"| **all** | | **{total['cases']}** | **{total['case ok']}** | "
                 + " | ".join(f"**{total[o]}**" for o in OUTCOMES) + " |")
    return "\n".join(lines), dict(total)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1, help="Each file x damage this many times (new seeds).")
    ap.add_argument("--quick", action="store_true", help="One case per target (one file, one damage kind).")
    ap.add_argument("--target", action="append", help="Only these targets (repeatable).")
    ap.add_argument("--out", type=Path, help="JSON with every case.")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    cases = run(a.seed, a.rounds, a.quick, a.target, (lambda s: None) if a.quiet else
                (lambda s: print(s, flush=True)))
    md, total = table(cases)
    print(md)
    print(f"{len(cases)} cases in {time.perf_counter() - t0:.0f} s")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        head = {"seed": a.seed, "rounds": a.rounds, "quick": a.quick, "totals": total,
                "seconds": round(time.perf_counter() - t0, 1)}
        a.out.write_text("{\n" + "".join(f"{json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items())
                         + '"cases": [\n' + ",\n".join(json.dumps(c.__dict__) for c in cases) + "\n]}\n")
    failed = total.get("traceback", 0) + total.get("hang", 0) + total.get("wrong", 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
