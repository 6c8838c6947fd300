"""img2dataset's resizer behind a pixel bound read from the image header.

img2dataset decodes with OpenCV, which allocates the whole image from its header: a 3 MB PNG declaring
20000 x 20000 16-bit RGBA asks for 3.2 GB before any check runs, and OpenCV's own bound is an environment
variable read once at import. So each image's header is read first (by Pillow, which reads only the
header) and an image over the bound, or one whose size cannot be read, is refused without decoding.
"""

from __future__ import annotations

from img2dataset.resizer import Resizer

from curate.signals.decode import TOO_MANY_PIXELS, DecodeLimits, header_refusal

# img2dataset's own messages for the same refusals, so the reasons read the same whoever refused
_MESSAGES = {TOO_MANY_PIXELS: "image area too large"}


class BoundedResizer(Resizer):
    """A Resizer that refuses, from the header, what img2dataset would only refuse after decoding."""

    def __init__(self, *args, max_pixels: int, **kwargs):
        super().__init__(*args, max_image_area=max_pixels, **kwargs)
        self.limits = DecodeLimits(max_pixels=max_pixels, max_aspect_ratio=float("inf"))

    def __call__(self, img_stream, blurring_bbox_list=None):
        img_stream.seek(0)
        refused = header_refusal(img_stream, self.limits)
        img_stream.seek(0)
        if refused:
            return None, None, None, None, None, _MESSAGES.get(refused, f"image decoding error ({refused} header)")
        return super().__call__(img_stream, blurring_bbox_list)
