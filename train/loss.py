"""open_clip's contrastive loss, extended to the one step where ranks hold different numbers of samples.

The exact budget trims the last global batch; its samples are split over ranks as evenly as possible, which
can leave ranks one sample apart. open_clip's gather needs equal shapes, so that step pads before gathering
and drops the padding after; every other step is open_clip's ClipLoss unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss


def split_batch(n: int, world_size: int) -> list[int]:
    """How many of a global batch of n samples each rank trains on: as even as possible, lower ranks first."""
    base, extra = divmod(n, world_size)
    return [base + (r < extra) for r in range(world_size)]


class ExactClipLoss(ClipLoss):
    """ClipLoss(local_loss=True, gather_with_grad=True) that also accepts unequal per-rank batch sizes."""

    def __init__(self, rank: int = 0, world_size: int = 1):
        super().__init__(local_loss=True, gather_with_grad=True, cache_labels=False, rank=rank,
                         world_size=world_size)

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, sizes=None):
        if self.world_size == 1 or sizes is None or len(set(sizes)) == 1:
            return super().forward(image_features, text_features, logit_scale, logit_bias)
        import torch.distributed.nn

        most = max(sizes)

        def gather(x):
            padded = F.pad(x, (0, 0, 0, most - x.shape[0]))
            return torch.cat([g[:n] for g, n in zip(torch.distributed.nn.all_gather(padded), sizes)])

        all_image, all_text = gather(image_features), gather(text_features)
        n = image_features.shape[0]
        if n == 0:  # still took part in the gathers; contributes nothing
            return (image_features.sum() + text_features.sum()) * 0.0 + logit_scale * 0.0
        logits_per_image = logit_scale * image_features @ all_text.T
        logits_per_text = logit_scale * text_features @ all_image.T
        if logit_bias is not None:
            logits_per_image = logits_per_image + logit_bias
            logits_per_text = logits_per_text + logit_bias
        labels = torch.arange(n, device=image_features.device) + sum(sizes[: self.rank])
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


class SigLipLossSizes(SigLipLoss):
    """open_clip's SigLipLoss (non-standard option) with the `sizes` argument of ExactClipLoss.

    Its neighbour exchange needs equal shapes on all ranks, so the run checks at start-up that the trimmed
    last batch divides evenly over ranks.
    """

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, sizes=None):
        if sizes is not None and len(set(sizes)) > 1:
            raise ValueError(f"SigLIP loss needs equal per-rank batches, got {sizes}")
        return super().forward(image_features, text_features, logit_scale, logit_bias)


def make_loss(siglip: bool, rank: int = 0, world_size: int = 1):
    """DataComp's contrastive loss, or SigLIP's sigmoid loss when asked for (non-standard)."""
    if siglip:
        return SigLipLossSizes(rank=rank, world_size=world_size)
    return ExactClipLoss(rank=rank, world_size=world_size)
