"""The clip, aesthetic and language signals of `curate stage`, on tiny open_clip models with random weights.

The checkpoints are made here (no download); the model config is the project's datacomp-tiny, plus a
variant with a larger input so two preprocessings meet in one pass.
"""

import io
import json
import tarfile

import numpy as np
import open_clip
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curate.engines import LocalEngine
from curate.pool import Pool
from curate.signals.aesthetic import AestheticError, build_mlp
from curate.signals.clip import ClipSpec, clip_tag, register_configs
from curate.signals.language import LanguageDetector
from curate.stage import StageError, StageOptions, read_signal, run_stage
from tests.curate.helpers import add_member, tar_samples, write_shard_pool
from tests.signals.images import animated, encode, png_header, smooth

TINY = "datacomp-tiny"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny checkpoints of one architecture, and one of a 48-px variant (another preprocessing)."""
    d = tmp_path_factory.mktemp("models")
    register_configs()
    cfg = json.loads(json.dumps(open_clip.get_model_config(TINY)))
    cfg["vision_cfg"]["image_size"] = 48
    (d / "tiny48.json").write_text(json.dumps(cfg))
    paths = {}
    for name, arch, seed in (("a", TINY, 0), ("b", TINY, 1), ("c", "tiny48", 2)):
        if arch == "tiny48":
            open_clip.add_model_config(d / "tiny48.json")
        torch.manual_seed(seed)
        path = d / f"{name}.pt"
        torch.save({"state_dict": open_clip.create_model(arch).state_dict()}, path)  # open_clip's checkpoint layout
        paths[name] = str(path)
    return {"a": ClipSpec(TINY, paths["a"], "tiny_a"), "b": ClipSpec(TINY, paths["b"], "tiny_b"),
            "c": ClipSpec("tiny48", paths["c"], "tiny_c", str(d / "tiny48.json")), "dir": d}


def _bad_samples(tar_path, start: int):
    """Bad and odd images, a sample without a caption, one without an image: returns their uids."""
    rng = np.random.default_rng(5)
    im = smooth(rng, 60, 40)
    cases = [
        ("jpg", b"\xff\xd8\xffjunk"),  # unidentified
        ("jpg", b""),  # empty
        ("jpg", encode(im, "JPEG")[:200]),  # truncated
        ("png", png_header(100000, 100000)),  # decompression bomb header
        ("png", encode(Image.new("RGB", (2000, 2)), "PNG")),  # aspect ratio 1000
        ("jpg", encode(im.convert("CMYK"), "JPEG")),  # CMYK: fine
        ("png", encode(Image.fromarray((np.arange(2400).reshape(40, 60) * 20).astype(np.uint16)), "PNG")),  # 16-bit
        ("gif", animated(rng, "GIF")),  # animated: first frame
        ("webp", encode(im.convert("RGBA"), "WEBP")),  # transparent
        (None, None),  # no image at all
        ("jpg", encode(im, "JPEG")),  # fine, but no caption (below)
    ]
    uids = []
    with tarfile.open(tar_path, "a") as tar:
        for i, (ext, data) in enumerate(cases):
            uid = f"{start + i:032x}"
            key = f"bad{i:04d}"
            if ext is not None:
                add_member(tar, f"{key}.{ext}", data)
            if i != len(cases) - 1:
                add_member(tar, f"{key}.txt", f"an odd picture number {i}".encode())
            add_member(tar, f"{key}.json", json.dumps({"uid": uid}).encode())
            uids.append(uid)
    return uids


def _pool(root, sizes=(7, 6), bad=True):
    write_shard_pool(root, list(sizes), seed=3, failed_per_shard=0)
    return _bad_samples(root / "shards" / f"{len(sizes) - 1:08d}.tar", 1) if bad else []


def _samples(root):
    out = {}
    for t in sorted((root / "shards").glob("*.tar")):
        for _, files in tar_samples(t):
            out[json.loads(files["json"])["uid"]] = files
    return out


def test_column_tags():
    assert clip_tag("ViT-B-32", "openai") == "b32" and clip_tag("ViT-L-14", "openai") == "l14"
    assert clip_tag("ViT-B-16", "laion2b_s34b_b88k") == "vit_b_16_laion2b_s34b_b88k"
    assert clip_tag("ViT-B-32", "/ckpt/epoch_5.pt") == "vit_b_32_epoch_5"
    spec = ClipSpec("ViT-L-14", "openai")
    assert spec.folder == "clip_l14" and spec.columns == ("clip_l14_similarity_score", "l14_img", "l14_txt")


def test_clip_columns_equal_the_model(tmp_path, models):
    root = tmp_path / "pool"
    bad = _pool(root)
    spec = models["a"]
    with LocalEngine(1) as engine:
        stats = run_stage(Pool(root), ["phash", "clip"], engine,
                          options=StageOptions(models=(spec,), batch_size=5, device="cpu", torch_threads=1))
    table = read_signal(Pool(root), "clip_tiny_a")
    rows = table.to_pylist()
    n = 13 + len(bad)
    assert len(rows) == n and table.schema.field("tiny_a_img").type.list_size == 64
    assert str(table.schema.field("tiny_a_img").type.value_type) == "halffloat"
    c = stats["per_signal"]["clip_tiny_a"]
    assert c["samples"] == n == c["ok"] + sum(c["failed"].values())  # samples in = ok + failed
    status = {r["uid"]: r["status"] for r in rows}
    assert [status[u] for u in bad] == ["unidentified", "empty", "truncated", "too_many_pixels", "aspect_ratio",
                                        "ok", "ok", "ok", "ok", "no_image", "no_text"]
    # The reference: open_clip's own loading, transform and encoders, one sample at a time, all 16 tokens.
    model, _, preprocess = open_clip.create_model_and_transforms(TINY, pretrained=spec.pretrained)
    tokenizer = open_clip.get_tokenizer(TINY)
    model.eval()
    samples = _samples(root)
    checked = 0
    for r in rows:
        files = samples[r["uid"]]
        data = next((files[e] for e in ("jpg", "png", "gif", "webp") if e in files), None)
        img_ok = r["status"] in ("ok", "no_text")
        assert (r["tiny_a_img"] is not None) == img_ok
        assert (r["tiny_a_txt"] is not None) == ("txt" in files)
        assert (r["clip_tiny_a_similarity_score"] is not None) == (r["status"] == "ok")
        with torch.no_grad():
            if img_ok:
                # The stage converts to RGB before resizing (open_clip's transform would resize a palette
                # image with NEAREST first); the rest is open_clip's transform as it is.
                rgb = Image.open(io.BytesIO(data)).convert("RGB")
                ref = model.encode_image(preprocess(rgb)[None], normalize=True)[0].numpy()
                got = np.asarray(r["tiny_a_img"], np.float32)
                np.testing.assert_allclose(got, ref, atol=1e-3)  # float16 storage
                assert abs(np.linalg.norm(got) - 1) < 2e-3
            if "txt" in files:
                ref_t = model.encode_text(tokenizer([files["txt"].decode()]), normalize=True)[0].numpy()
                np.testing.assert_allclose(np.asarray(r["tiny_a_txt"], np.float32), ref_t, atol=1e-3)
            if r["status"] == "ok":
                assert r["clip_tiny_a_similarity_score"] == pytest.approx(float(ref @ ref_t), abs=1e-4)  # cosine
                checked += 1
    assert checked == 13 + 4


def test_one_decode_per_image_for_all_image_signals(tmp_path, models, monkeypatch):
    """phash + three clip models (two preprocessings) + sha256: each image decoded once, preprocessed once per preprocessing."""
    import curate.signals.clip as clip_mod
    import curate.signals.shardpass as shardpass

    root = tmp_path / "pool"
    bad = _pool(root)
    decodes = []
    real_decode = shardpass.decode_image
    monkeypatch.setattr(shardpass, "decode_image", lambda data, *a, **k: decodes.append(len(data)) or real_decode(data, *a, **k))
    calls = {}
    real_transform = clip_mod.get_transform

    def counting_transform(cfg):
        tf = real_transform(cfg)
        key = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]

        def run(im):
            calls[key] = calls.get(key, 0) + 1
            return tf(im)
        return run

    monkeypatch.setattr(clip_mod, "get_transform", counting_transform)
    opts = StageOptions(models=(models["a"], models["b"], models["c"]), batch_size=4, device="cpu", torch_threads=1)
    with LocalEngine(1) as engine:
        stats = run_stage(Pool(root), ["phash", "sha256", "clip"], engine, options=opts)
    with_image = 13 + len(bad) - 1  # every sample but the one without an image
    assert len(decodes) == with_image
    decoded_ok = 13 + 4 + 1  # the rest fail in the decode, before any preprocessing
    assert calls == {32: decoded_ok, 48: decoded_ok}  # a and b share one preprocessing; c has its own
    for f in ("phash", "sha256", "clip_tiny_a", "clip_tiny_b", "clip_tiny_c"):
        s = stats["per_signal"][f]
        assert s["samples"] == 13 + len(bad) == s["ok"] + sum(s["failed"].values())
    a, b = read_signal(Pool(root), "clip_tiny_a"), read_signal(Pool(root), "clip_tiny_b")
    assert a.column("uid").equals(b.column("uid")) and not a.column("tiny_a_img").equals(b.column("tiny_b_img"))


def test_loader_workers_write_the_same_files(tmp_path, models):
    """The GPU design (decode in DataLoader workers, model in this process), run on CPU, equals the engine path."""
    ref, root = tmp_path / "ref", tmp_path / "pool"
    _pool(ref)
    _pool(root)
    base = dict(models=(models["a"],), batch_size=4, device="cpu", torch_threads=1)
    with LocalEngine(1) as engine:
        run_stage(Pool(ref), ["phash", "clip", "language"], engine, options=StageOptions(**base))
        stats = run_stage(Pool(root), ["phash", "clip", "language"], engine,
                          options=StageOptions(**base, loader_workers=2, progress=False))
    assert stats["engine"] == "loader" and stats["shards_computed"] == 2
    for f in sorted((ref / "columns").glob("*/*.parquet")):
        assert pq.read_table(root / "columns" / f.parent.name / f.name).equals(pq.read_table(f)), f


def test_aesthetic_from_a_state_dict(tmp_path, models):
    root = tmp_path / "pool"
    _pool(root, bad=False)
    torch.manual_seed(7)
    mlp = build_mlp(64)  # the v2 layout at the tiny model's width
    weights = tmp_path / "aesthetic.pth"
    torch.save(mlp.state_dict(), weights)
    assert sorted(torch.load(weights, weights_only=True)) == sorted(
        f"layers.{i}.{w}" for i in (0, 2, 4, 6, 7) for w in ("weight", "bias"))
    opts = StageOptions(aesthetic_weights=str(weights), aesthetic_model=models["a"], device="cpu", torch_threads=1)
    with LocalEngine(1) as engine:
        stats = run_stage(Pool(root), ["aesthetic"], engine, options=opts)
        assert stats["per_signal"]["aesthetic"] == {"samples": 13, "ok": 13, "failed": {}}
        scores = read_signal(Pool(root), "aesthetic")
        emb = read_signal(Pool(root), "clip_tiny_a")  # the feeding embeddings come with it
        assert scores.column("uid").equals(emb.column("uid"))
        x = torch.tensor(np.asarray(emb.column("tiny_a_img").to_pylist(), np.float32))
        with torch.no_grad():
            ref = mlp.eval()(torch.nn.functional.normalize(x, dim=-1))[:, 0].numpy()
        np.testing.assert_allclose(scores.column("aesthetic_score").to_numpy(), ref, rtol=1e-5, atol=1e-6)
        # Deleting a shard's aesthetic file recomputes it from the stored embeddings: same bits.
        path = root / "columns" / "aesthetic" / "00000000.parquet"
        before = pq.read_table(path)
        path.unlink()
        again = run_stage(Pool(root), ["aesthetic"], engine, options=opts)
        assert again["shards_computed"] == 1 and again["device"] is None  # no model was needed
        assert pq.read_table(path).equals(before)
        # A predictor for another width fails clearly, naming both widths.
        torch.save(build_mlp(768).state_dict(), tmp_path / "l14.pth")
        (root / "columns" / "aesthetic" / "00000001.parquet").unlink()
        wide = StageOptions(aesthetic_weights=str(tmp_path / "l14.pth"), aesthetic_model=models["a"], device="cpu", torch_threads=1)
        with pytest.raises(AestheticError, match="768-wide.*gives 64-wide"):
            run_stage(Pool(root), ["aesthetic"], engine, options=wide)
        torch.save({"fc.weight": torch.zeros(1, 768)}, tmp_path / "other.pth")
        with pytest.raises(AestheticError, match="not a LAION aesthetic predictor v2"):
            run_stage(Pool(root), ["aesthetic"], engine, options=StageOptions(aesthetic_weights=str(tmp_path / "other.pth"),
                                                                             aesthetic_model=models["a"]))
        with pytest.raises(StageError, match="--aesthetic-weights"):
            run_stage(Pool(root), ["aesthetic"], engine)


def test_language_over_shards(tmp_path):
    root = tmp_path / "pool"
    bad = _pool(root)
    with LocalEngine(1) as engine:
        stats = run_stage(Pool(root), ["language"], engine)
    files = sorted(p.name for p in (root / "columns" / "language").glob("*.parquet"))
    assert files == ["shard-00000000.parquet", "shard-00000001.parquet"]
    table = read_signal(Pool(root), "language")
    samples = _samples(root)
    captions = [samples[u]["txt"].decode() if "txt" in samples[u] else None for u in table.column("uid").to_pylist()]
    ref = LanguageDetector().detect(captions)
    assert table.column("language").equals(ref.column("language"))
    assert table.column("language_score").equals(ref.column("language_score"))
    status = dict(zip(table.column("uid").to_pylist(), table.column("status").to_pylist()))
    assert status[bad[-1]] == "no_text"
    s = stats["per_signal"]["language"]
    assert s["samples"] == 13 + len(bad) == s["ok"] + sum(s["failed"].values())
    # The metadata-level cache marker, so `curate run` can tell which detector wrote it.
    marker = pq.read_schema(root / "columns" / "language" / files[0]).metadata[b"curate.language_detector"]
    assert marker == LanguageDetector().name.encode() and marker.startswith(b"fasttext:lid.176.ftz:")


def test_export_npz(tmp_path, models):
    from curate.cli import main

    root = tmp_path / "pool"
    _pool(root)
    with LocalEngine(1) as engine:
        run_stage(Pool(root), ["clip"], engine, options=StageOptions(models=(models["a"], models["b"]), device="cpu", torch_threads=1))
    assert main(["export-npz", "--pool", str(root), "--tag", "tiny_a", "--tag", "tiny_b"]) == 0
    for shard in ("00000000", "00000001"):
        col = pq.read_table(root / "columns" / "clip_tiny_a" / f"{shard}.parquet")
        uids = pq.read_table(root / "npz" / f"{shard}.parquet")
        assert uids.column("uid").equals(col.column("uid"))
        with np.load(root / "npz" / f"{shard}.npz") as npz:
            assert sorted(npz.files) == ["tiny_a_img", "tiny_a_txt", "tiny_b_img", "tiny_b_txt"]
            img = npz["tiny_a_img"]
            assert img.dtype == np.float16 and img.shape == (col.num_rows, 64)
            for i, v in enumerate(col.column("tiny_a_img").to_pylist()):
                assert np.array_equal(img[i], np.zeros(64, np.float16) if v is None else np.asarray(v, np.float16))
    assert main(["export-npz", "--pool", str(root), "--tag", "l14"]) == 2  # names what is there instead


def test_bad_model_options_fail_clearly(tmp_path, models):
    from curate.signals.clip import ClipModelError

    root = tmp_path / "pool"
    _pool(root, sizes=(2,), bad=False)
    with LocalEngine(1) as engine:
        for spec, msg in ((ClipSpec("no-such-arch", "x.pt", "x"), "unknown open_clip architecture"),
                          (ClipSpec(TINY, str(tmp_path / "missing.pt"), "x"), "checkpoint file not found"),
                          (ClipSpec("tiny48", models["a"].pretrained, "x", models["c"].model_config), "does not match architecture")):
            with pytest.raises(ClipModelError, match=msg):
                run_stage(Pool(root), ["clip"], engine, options=StageOptions(models=(spec,), device="cpu", torch_threads=1))
        with pytest.raises(StageError, match="both write columns/clip_x"):
            run_stage(Pool(root), ["clip"], engine, options=StageOptions(
                models=(ClipSpec(TINY, "a.pt", "x"), ClipSpec(TINY, "b.pt", "x"))))


def test_ensure_columns_computes_only_what_the_pool_lacks(tmp_path, models, monkeypatch):
    from curate.stage import COLUMN_PRODUCERS, ensure_columns

    root = tmp_path / "pool"
    _pool(root, bad=False)
    assert COLUMN_PRODUCERS["l14_img"] == ("clip", {"model": "ViT-L-14", "pretrained": "openai"})
    wanted = ["uid", "text", "clip_l14_similarity_score", "sha256", "phash", "language", "language_score"]
    with LocalEngine(1) as engine:
        # DataComp's metadata carries the L/14 score and sha256: only phash and language are computed.
        assert ensure_columns(Pool(root), wanted, engine) == ["phash", "language", "language_score"]
        assert sorted(p.name for p in (root / "columns" / "phash").glob("*.parquet")) == ["00000000.parquet", "00000001.parquet"]
        assert ensure_columns(Pool(root), wanted, engine) == []
        monkeypatch.setitem(COLUMN_PRODUCERS, "tiny_a_img",
                            ("clip", {"model": TINY, "pretrained": models["a"].pretrained, "tag": "tiny_a"}))
        assert ensure_columns(str(root), ["tiny_a_img", "phash"], engine, {"device": "cpu", "batch_size": 8, "torch_threads": 1}) == ["tiny_a_img"]
        assert len(read_signal(Pool(root), "clip_tiny_a")) == 13
        assert ensure_columns(str(root), ["tiny_a_img"], engine) == []


def _column_rows(root):
    return {p.relative_to(root).as_posix(): pq.read_table(p).to_pylist()
            for p in sorted((root / "columns").glob("*/*.parquet"))}


def test_killed_clip_stage_resumes_to_the_same_files(tmp_path, models):
    """SIGKILL mid-pass (phash, sha256, language, clip), run again: the same files as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root, ref = tmp_path / "pool", tmp_path / "ref"
    for r in (root, ref):
        write_shard_pool(r, [16] * 10, seed=9, failed_per_shard=0)
    spec = models["a"]
    signals = ["phash", "sha256", "language", "clip"]
    with LocalEngine(1) as engine:
        run_stage(Pool(ref), signals, engine, options=StageOptions(models=(spec,), batch_size=8, device="cpu", torch_threads=1))
    cmd = [sys.executable, "-m", "curate.cli", "stage", "--pool", str(root), "--signals", ",".join(signals),
           "--model", TINY, "--pretrained", spec.pretrained, "--clip-tag", "tiny_a", "--device", "cpu",
           "--batch-size", "8", "--processes", "1", "--torch-threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    clip_dir = root / "columns" / "clip_tiny_a"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(clip_dir.glob("*.parquet"))) < 2:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(list(clip_dir.glob("*.parquet")))
    assert 2 <= partial < 10, "the kill should land mid-stage"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "clip_tiny_a" in out.stdout
    assert _column_rows(root) == _column_rows(ref)
    for folder in ("phash", "sha256", "language", "clip_tiny_a"):
        assert len(read_signal(Pool(root), folder)) == 10 * 16


def test_curate_run_computes_the_score_it_filters_on(tmp_path, models, monkeypatch, capsys):
    """`curate run --filter clip_score` on a pool without scores runs the clip stage first, then filters."""
    from curate.cli import main
    from curate.stage import COLUMN_PRODUCERS
    from curate.subset import read_subset

    root = tmp_path / "pool"
    _pool(root, bad=False)
    monkeypatch.setitem(COLUMN_PRODUCERS, "clip_tiny_a_similarity_score",
                        ("clip", {"model": TINY, "pretrained": models["a"].pretrained, "tag": "tiny_a", "torch_threads": 1}))
    args = ["run", "--pool", str(root), "--filter", "clip_score", "--arch", "tiny_a", "--fraction", "0.5",
            "--output", str(tmp_path / "out"), "--processes", "1", "--no-report", "--no-reshard"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "computed missing signals first: clip_tiny_a_similarity_score" in out
    scores = read_signal(Pool(root), "clip_tiny_a").column("clip_tiny_a_similarity_score").to_numpy(zero_copy_only=False)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["kept"] == len(read_subset(tmp_path / "out" / "subset.npy")) >= int(len(scores) * 0.5) > 0
    assert main(args) == 0 and "computed missing signals" not in capsys.readouterr().out  # nothing left to compute
