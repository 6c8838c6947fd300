"""Arrays from files a user names (image_based's centroids and targets), read without running their code.

DataComp publishes its image_based assets as torch files: pool centroids (`{scale}_centroids_l14.pt`, a
`torch.save` of a float32 numpy array in pickle protocol 4) and ImageNet-1k targets (`in1k_clip_vit_l14_{0..4}.pt`,
dicts whose "image_features" is a tensor). A pickle can run any code on load, so:

- a `.pt` of tensors is read with `torch.load(weights_only=True)` (tensors, dicts and plain values only);
- a `.pt` holding a numpy array (torch's safe loader reads neither numpy's globals nor protocol 4) is read by
  an unpickler that resolves only numpy's array reconstruction (`_reconstruct`, `ndarray`, `dtype` and its
  classes, `_codecs.encode`) and refuses every other global and every tensor; the array must be numeric;
- a `.npy` is read with `allow_pickle=False`.
"""

from __future__ import annotations

import codecs
import glob
import io
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np


class AssetError(ValueError):
    """A file that is missing, unsafe to load, or not the array it should be."""


def _numpy_globals() -> dict[tuple[str, str], object]:
    from numpy._core.multiarray import _reconstruct

    allowed = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1.x pickles
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2.x pickles
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for name in dir(np.dtypes):
        if name.endswith("DType"):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str):
        super().__init__(file)
        self.where = where
        self.allowed = _numpy_globals()

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise AssetError(f"{self.where}: refused to load {module}.{name} (only numpy arrays are read from this file)")

    def persistent_load(self, pid):
        raise AssetError(f"{self.where}: holds torch tensors in a form torch's safe loader cannot read")


def _numpy_pickle_in_torch_zip(path: Path):
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("data.pkl")]
            if len(pkl) != 1:
                raise AssetError(f"{path}: not a torch file (expected one data.pkl inside, found {len(pkl)})")
            raw = z.read(pkl[0])
    except zipfile.BadZipFile:
        raise AssetError(f"{path}: not a torch file (torch.save's zip format)") from None
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(raw), str(path)).load()
    except AssetError:
        raise
    except Exception as e:
        raise AssetError(f"{path}: cannot read ({e})") from None


def _load_pt(path: Path):
    import torch

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # protocol 4 is handled below
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return _numpy_pickle_in_torch_zip(path)  # numpy inside (DataComp's centroids): the numpy-only reader
    except RuntimeError as e:
        raise AssetError(f"{path}: not a torch file ({e})") from None


def as_matrix(obj, where: str) -> np.ndarray:
    """A 2-D float32 matrix from an array, a tensor, or DataComp's {"image_features": tensor} dict."""
    if isinstance(obj, dict):
        if "image_features" not in obj:
            raise AssetError(f"{where}: a dict without 'image_features' (keys: {', '.join(map(str, obj))})")
        obj = obj["image_features"]
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):  # a torch tensor
        obj = obj.detach().float().numpy()
    if not isinstance(obj, np.ndarray):
        raise AssetError(f"{where}: expected an array of embeddings, found {type(obj).__name__}")
    if obj.ndim != 2 or not len(obj) or not (np.issubdtype(obj.dtype, np.floating) or np.issubdtype(obj.dtype, np.integer)):
        raise AssetError(f"{where}: expected a 2-D numeric array (rows of embeddings), got shape {obj.shape} {obj.dtype}")
    return np.ascontiguousarray(obj, dtype=np.float32)


def load_matrix(path: str | Path) -> np.ndarray:
    """One `.npy` or `.pt` file as a float32 (rows, dim) matrix."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: file not found")
    if path.suffix == ".npy":
        try:
            return as_matrix(np.load(path, allow_pickle=False), str(path))
        except ValueError as e:
            if isinstance(e, AssetError):
                raise
            raise AssetError(f"{path}: cannot read as .npy ({e})") from None
    if path.suffix in (".pt", ".pth"):
        return as_matrix(_load_pt(path), str(path))
    raise AssetError(f"{path}: expected a .npy or .pt file")


def expand(spec: str) -> list[str]:
    """A comma list of files, each a path or a glob (sorted); DataComp's five target files are one glob."""
    files: list[str] = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        if any(c in part for c in "*?["):
            hits = sorted(glob.glob(part))
            if not hits:
                raise AssetError(f"{part}: no file matches")
            files.extend(hits)
        else:
            files.append(part)
    if not files:
        raise AssetError(f"{spec!r}: names no file")
    return files


def load_matrices(spec: str) -> np.ndarray:
    """Every file `spec` names, stacked in order (DataComp's torch.cat of its five target files)."""
    mats = [load_matrix(f) for f in expand(spec)]
    if len({m.shape[1] for m in mats}) != 1:
        raise AssetError(f"{spec}: files of different widths ({', '.join(str(m.shape[1]) for m in mats)})")
    return np.concatenate(mats)
