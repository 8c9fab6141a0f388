"""One image file decoded to an NxN RGB array, for the folder cache (engine/folder.py) and for a
streamed folder's per-item reads (engine/items.py) alike, so both see the same pixels."""

from __future__ import annotations

import numpy as np

from tuneassist.dataref import DEFAULT_SIDE

SIZE = DEFAULT_SIDE  # the size of every other data source, and of the models' design


class DataWarning(UserWarning):
    """Something about the data the user should know (skipped or resized images) that is not fatal."""


def decode_one(path: str, side: int = SIZE) -> tuple[np.ndarray, tuple[int, int]]:
    """One image as side x side x 3 uint8 and its original (width, height). Raises on unreadable files."""
    from PIL import Image

    with Image.open(path) as opened:
        size = (int(opened.size[0]), int(opened.size[1]))
        resized = size != (side, side)
        if resized:
            opened.draft("RGB", (side, side))  # JPEG: decode at reduced scale straight away (much faster)
        im: Image.Image = opened
        if im.mode == "P":
            im = im.convert("RGBA")  # palette transparency is only honoured via RGBA
        if im.mode != "RGB":
            im = im.convert("RGB")
        if im.size != (side, side):
            im = im.resize((side, side), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    if arr.shape != (side, side, 3):
        raise ValueError(f"decoded to shape {arr.shape}")
    return arr, size
