"""image_based with DataComp's published asset files, written here in the same formats, read without running code.

DataComp's `{scale}_centroids_l14.pt` is `torch.save(numpy_float32_array, pickle_protocol=4)` made under numpy
1.x (so its pickle names `numpy.core.multiarray._reconstruct`); `in1k_clip_vit_l14_{0..4}.pt` are dicts whose
"image_features" is a tensor. The files below are made the same way; the centroids' global names are written as
numpy 1.x writes them.
"""

from __future__ import annotations

import os
import pickle
import types

import numpy as np
import pytest
import torch

from curate.assets import AssetError, load_matrices, load_matrix
from filters.base import FilterConfigError
from filters.registry import build_filter_strict
from tests.curate.test_filter_library import DIM, centers, load_frame, pairs, py_language, ref_image_based, run, write_library_pool


class _Numpy1Pickler(pickle._Pickler):
    """numpy 2's `numpy._core` globals under numpy 1.x's `numpy.core` names."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            self.save(module.replace("numpy._core", "numpy.core", 1))
            self.save(name or obj.__qualname__)
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def save_datacomp_centroids(path, centroids: np.ndarray) -> str:
    torch.save(centroids.astype(np.float32), path, pickle_module=types.SimpleNamespace(Pickler=_Numpy1Pickler, __name__="pickle"),
               pickle_protocol=4)
    return str(path)


def save_datacomp_targets(folder, targets: np.ndarray, parts: int = 5) -> list[str]:
    paths = []
    for i, chunk in enumerate(np.array_split(targets, parts)):
        p = folder / f"in1k_clip_vit_l14_{i}.pt"
        torch.save({"image_features": torch.from_numpy(chunk.astype(np.float16))}, p)
        paths.append(str(p))
    return paths


def test_datacomp_format_files_load(tmp_path):
    c = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    path = save_datacomp_centroids(tmp_path / "small_centroids_l14.pt", c)
    with open(path, "rb") as f:
        assert b"numpy.core.multiarray" in f.read()  # as numpy 1.x wrote DataComp's file
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # torch's safe loader alone cannot read it
    assert np.array_equal(load_matrix(path), c)
    t = np.random.default_rng(2).normal(size=(23, 5)).astype(np.float32)
    files = save_datacomp_targets(tmp_path, t)
    want = t.astype(np.float16).astype(np.float32)
    assert np.array_equal(load_matrices(str(tmp_path / "in1k_clip_vit_l14_*.pt")), want)
    assert np.array_equal(load_matrices(",".join(files)), want)
    np.save(tmp_path / "t.npy", t)
    assert np.array_equal(load_matrices(str(tmp_path / "t.npy")), t)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_files_that_would_run_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    torch.save({"image_features": _Exploit()}, tmp_path / "evil2.pt")  # protocol 2: torch's loader refuses
    torch.save(_Exploit(), tmp_path / "evil4.pt", pickle_protocol=4)  # protocol 4: the numpy-only reader refuses
    for name in ("evil2.pt", "evil4.pt"):
        with pytest.raises(AssetError, match="refused to load posix.system|refused to load os.system"):
            load_matrix(tmp_path / name)
    assert not marker.exists()
    torch.save(np.array([{"a": 1}], dtype=object), tmp_path / "objects.pt", pickle_protocol=4)
    with pytest.raises(AssetError, match="objects.pt: expected a 2-D numeric array.*object"):
        load_matrix(tmp_path / "objects.pt")
    np.save(tmp_path / "o.npy", np.array([1, "x"], dtype=object), allow_pickle=True)
    with pytest.raises(AssetError, match="o.npy"):
        load_matrix(tmp_path / "o.npy")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(AssetError, match="junk.pt: not a torch file"):
        load_matrix(tmp_path / "junk.pt")
    with pytest.raises(AssetError, match="no file matches"):
        load_matrices(str(tmp_path / "nothing_*.pt"))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("assetpool")
    write_library_pool(root, [700, 500], seed=4)
    df, emb = load_frame(root)
    return {"root": root, "df": df, "emb": emb, "lang": np.array(py_language(df.text.tolist()), dtype=object)}


def test_image_based_with_datacomp_centroids_and_targets(pool, tmp_path):
    rng = np.random.default_rng(3)
    cents = centers() + rng.normal(0, 0.05, (len(centers()), DIM))
    cents = np.concatenate([cents, rng.normal(size=(8, DIM))]).astype(np.float32)  # 32 centroids
    targets = (centers()[rng.choice(5, 30)] + rng.normal(0, 0.1, (30, DIM))).astype(np.float32)
    cpath = save_datacomp_centroids(tmp_path / "small_centroids_l14.pt", cents)
    save_datacomp_targets(tmp_path, targets)
    opts = {"targets": str(tmp_path / "in1k_clip_vit_l14_*.pt"), "centroids": cpath}
    got, stats = run(pool["root"], [build_filter_strict("image_based", opts)], tmp_path / "o", report=False)
    want = ref_image_based(pool["df"], pool["emb"], pool["lang"], targets.astype(np.float16).astype(np.float32), 0, 0,
                           centroids=cents)
    assert np.array_equal(got, pairs(pool["df"].uid[want])) and 0 < len(got) < len(pool["df"])
    p = stats["filters"][0]
    assert p["centroids"] == cpath and p["k_used"] == 32 and p["targets_rows"] == 30
    assert [s["kind"] for s in stats["pool_steps"]] == ["file", "file"]  # no k-means
    both = build_filter_strict("image_based_clip_score", {**opts, "fraction": 0.5})
    got2, _ = run(pool["root"], [both], tmp_path / "o2", report=False)
    assert set(map(tuple, got2.tolist())) <= set(map(tuple, got.tolist())) and len(got2) > 0


def test_asset_mistakes_are_clear(pool, tmp_path):
    cpath = save_datacomp_centroids(tmp_path / "c.pt", np.zeros((4, DIM + 1), np.float32))
    np.save(tmp_path / "t.npy", np.zeros((3, DIM), np.float32))
    with pytest.raises(FilterConfigError, match="targets have 48 dimensions, .*c.pt 49"):
        run(pool["root"], [build_filter_strict("image_based", {"targets": str(tmp_path / "t.npy"), "centroids": cpath})],
            tmp_path / "o", report=False)
    with pytest.raises(FilterConfigError, match="none_.*no file matches"):
        run(pool["root"], [build_filter_strict("image_based", {"targets": str(tmp_path / "none_*.pt")})], tmp_path / "p",
            report=False)
