"""Images cross from loader workers to the model as uint8 and are normalised on the device, bit for bit as on CPU.

open_clip's train transform ends in ToTensor and Normalize: two float passes over every pixel in the worker
(1.7 of the 4.3 ms a 256 px sample costs on one CPU core) and a float32 batch four times the size of its
bytes (2.5 GB at 4096 x 224 px) to pass through shared memory, pin and copy to the GPU. Here the worker stops
at the cropped RGB image and sends its uint8 pixels; the device maps each byte through a 256-entry table per
channel that was computed by that same ToTensor and Normalize. A byte can only map to one float, so the model
sees exactly the tensor open_clip's transform would have made, on any device.

The crop itself, when it is open_clip's (RandomResizedCrop with Pillow's BICUBIC), runs as a compiled kernel
that gives Pillow's bytes (`crop`), three times faster than Pillow's resize.

A transform that does not end in ToTensor, Normalize (timm's, with random erasing after Normalize) runs whole
in the worker, and its floats cross as before. So does every transform when training on CPU: there the
lookup (about 1 ms an image at 224 px) would only move work from the loader workers to the training process.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torchvision import transforms

from .crop import ResizedCrop

CHUNK = 256  # images normalised at a time: bounds the int32 index tensor at CHUNK x C x H x W x 4 bytes


def _split(preprocess) -> tuple[Callable, transforms.ToTensor, transforms.Normalize] | None:
    """(the PIL part, its ToTensor, its Normalize) when the transform ends in ToTensor, Normalize; else None."""
    steps = getattr(preprocess, "transforms", None)
    if not isinstance(preprocess, transforms.Compose) or not steps or len(steps) < 2:
        return None
    to_tensor, normalize = steps[-2], steps[-1]
    if not isinstance(to_tensor, transforms.ToTensor) or not isinstance(normalize, transforms.Normalize):
        return None
    return transforms.Compose(list(steps[:-2])), to_tensor, normalize


def _table(to_tensor: Callable, normalize: Callable) -> torch.Tensor:
    """Every byte value of every channel through the transform's own ToTensor and Normalize: (3 * 256,) floats."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8).reshape(256, 1, 1), 3, axis=2)  # an HWC image, 256 x 1
    return normalize(to_tensor(ramp))[:, :, 0].contiguous().reshape(-1)


class Pixels:
    """The worker's half (`worker`: PIL image to tensor) and the device's half (`to_model`) of a train transform."""

    def __init__(self, preprocess: Callable, uint8: bool = True):
        split = _split(preprocess) if uint8 else None
        if split is None:
            self.crop, self.table = preprocess, None
        else:
            self.crop, self.table = split[0], _table(split[1], split[2])
        # open_clip's crop (RandomResizedCrop, BICUBIC) compiled, bit for bit; other crops run in Pillow
        self.fast_crop = ResizedCrop.of(self.crop.transforms) if self.table is not None else None
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def uint8(self) -> bool:
        """Whether batches cross as uint8 (and need `to_model`)."""
        return self.table is not None

    def worker(self, image) -> torch.Tensor:
        """One sample's tensor as it crosses to the main process: uint8 CHW, or the whole transform's floats."""
        if self.table is None:
            return self.crop(image)
        if self.fast_crop is not None:
            return self.fast_crop(image)
        out = self.crop(image)
        if getattr(out, "mode", "RGB") != "RGB":
            out = out.convert("RGB")
        return torch.from_numpy(np.array(out, dtype=np.uint8)).permute(2, 0, 1)  # made contiguous by the batch's stack

    def to_model(self, images: torch.Tensor) -> torch.Tensor:
        """A batch as the model takes it: uint8 batches mapped through the table on their own device."""
        if images.dtype != torch.uint8:
            return images
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images of shape (N, 3, H, W), got {tuple(images.shape)}")
        table, offsets = self._tables(images.device)
        out = torch.empty(images.shape, dtype=table.dtype, device=images.device)
        for part, into in zip(images.split(CHUNK), out.split(CHUNK)):
            torch.index_select(table, 0, (part.int() + offsets).reshape(-1), out=into.view(-1))
        return out

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            offsets = (torch.arange(3, dtype=torch.int32) * 256).view(1, 3, 1, 1)
            self._on_device[device] = (self.table.to(device), offsets.to(device))
        return self._on_device[device]

    def __getstate__(self):  # device copies stay in the process that made them
        return {**self.__dict__, "_on_device": {}}
