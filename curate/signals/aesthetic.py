"""The `aesthetic` signal: the LAION aesthetic predictor v2 on L2-normalised CLIP ViT-L/14 image embeddings.

The predictor is the MLP of LAION's `improved-aesthetic-predictor` (`sac+logos+ava1-l14-linearMSE.pth`):
Linear 768->1024, Dropout 0.2, Linear 1024->128, Dropout 0.2, Linear 128->64, Dropout 0.1, Linear 64->16,
Linear 16->1, no activations; its state dict has keys `layers.{0,2,4,6,7}.{weight,bias}`. It is read here
in that original format with `torch.load(weights_only=True)` (a `{"state_dict": ...}` wrapper or a
`module.` prefix is accepted too).

Determinism: the score is computed on the CPU in float32 on one thread from the *stored* float16
embedding, re-normalised. So a score computed in the same pass as the embedding and one computed later from the
column store are the same bits, which keeps a resumed stage equal to an uninterrupted one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

AESTHETIC_COLUMN = "aesthetic_score"
LAYER_KEYS = ("layers.0", "layers.2", "layers.4", "layers.6", "layers.7")
#: the embedding the predictor was trained on
DEFAULT_FEED = ("ViT-L-14", "openai")


class AestheticError(ValueError):
    """A predictor file that is missing or not in the v2 layout, or embeddings of the wrong width."""


def build_mlp(input_size: int = 768):
    import torch.nn as nn

    class AestheticMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_size = input_size
            self.layers = nn.Sequential(
                nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

        def forward(self, x):
            return self.layers(x)

    return AestheticMLP()


class AestheticPredictor:
    def __init__(self, path: str):
        self.path = path
        self.mlp = _load(str(Path(path).resolve()))
        self.input_size = self.mlp.input_size

    def check_width(self, width: int | None, source: str) -> None:
        if width is not None and width != self.input_size:
            raise AestheticError(
                f"the aesthetic predictor {self.path} takes {self.input_size}-wide image embeddings "
                f"(CLIP ViT-L/14: 768), but {source} gives {width}-wide ones; feed it ViT-L-14 openai embeddings")

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) float16/float32 embeddings (as stored) -> (N,) float32 scores."""
        import torch

        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2:
            raise AestheticError(f"expected (N, {self.input_size}) embeddings, got shape {emb.shape}")
        self.check_width(emb.shape[1], "the embedding column")
        if len(emb) == 0:
            return np.zeros(0, np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.where(norms > 0, norms, 1.0)
        # One thread, always: a matmul's summation order (so its last bits) depends on the thread count,
        # and a score recomputed from the store must equal the one computed in the pass.
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                out = self.mlp(torch.from_numpy(np.ascontiguousarray(emb)))
        finally:
            torch.set_num_threads(before)
        return out[:, 0].numpy().astype(np.float32)


def load_predictor(path: str) -> AestheticPredictor:
    return AestheticPredictor(path)


@lru_cache(maxsize=4)
def _load(path: str):
    import torch

    p = Path(path)
    if not p.is_file():
        raise AestheticError(f"aesthetic predictor weights not found: {path} (LAION's sac+logos+ava1-l14-linearMSE.pth)")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AestheticError(f"cannot read aesthetic predictor {path}: {e}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise AestheticError(f"{path} holds no state dict")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    want = {f"{k}.{w}" for k in LAYER_KEYS for w in ("weight", "bias")}
    if set(sd) != want:
        raise AestheticError(f"{path} is not a LAION aesthetic predictor v2 state dict: expected keys "
                             f"{sorted(want)}, found {sorted(sd)[:12]}")
    width = int(sd["layers.0.weight"].shape[1])
    mlp = build_mlp(width)
    try:
        mlp.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise AestheticError(f"{path}: layer shapes do not match the v2 layout ({e})") from None
    return mlp.float().eval()


__all__ = ["AESTHETIC_COLUMN", "AestheticError", "AestheticPredictor", "build_mlp", "load_predictor"]
