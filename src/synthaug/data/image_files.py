"""Image files into uint8 arrays: 8-bit conversion (16-bit scaled, transparency composited, float refused), reading
with a content hash, and bilinear resizing. Shared by the real datasets read from files (CUB-200, image folders)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from synthaug.data.errors import DatasetError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
INT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}  # 16-bit files (PNG, TIFF) open as I;16 or I
GRAY_MODES = {"1", "L", "LA", "La", "F"} | INT_MODES  # a folder is RGB if any file is in another mode
ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
BACKGROUND = "black"  # transparent pixels are composited onto it


def resize_stack(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 [N,H,W,C] to [N,size,size,C] with PIL bilinear (no-op when already that size)."""
    if images.shape[1:3] == (size, size):
        return images
    mode = "L" if images.shape[3] == 1 else "RGB"
    return np.stack([to_array(Image.fromarray(im[..., 0] if mode == "L" else im), size, mode) for im in images])


def to_array(pil: Image.Image, size: int, mode: str) -> np.ndarray:
    """A PIL image of 8-bit `mode` ("L" or "RGB"), resized (bilinear) to uint8 [size,size,C]."""
    arr = np.asarray(pil.convert(mode).resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return arr.reshape(size, size, 1 if mode == "L" else 3)


def to_8bit(pil: Image.Image, mode: str, path: Path) -> tuple[Image.Image, str | None]:
    """`pil` as 8-bit `mode` ("L" or "RGB") and how it was converted (None: stored so). 16-bit 0..65535 is scaled
    to 0..255 (PIL's convert clips at 255), transparency composited onto BACKGROUND, float (no range) refused."""
    if pil.mode in INT_MODES:
        arr = np.asarray(pil)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DatasetError(f"{path}: integer image (mode {pil.mode}) with values {arr.min()}..{arr.max()}, "
                               "outside 16 bits (save it as 8- or 16-bit)")
        scaled = np.rint(arr.astype(np.float64) * (255 / 65535)).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert(mode), f"{pil.mode} (16-bit): 0..65535 scaled to 0..255"
    if pil.mode == "F":
        raise DatasetError(f"{path}: float image (mode F) has no defined value range; save it as 8- or 16-bit")
    if pil.mode in ALPHA_MODES or "transparency" in pil.info:
        rgba = pil.convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND), rgba)
        return flat.convert(mode), f"{pil.mode} (alpha): composited onto {BACKGROUND}"
    return pil.convert(mode), None if pil.mode == mode else f"{pil.mode}: converted to {mode}"


def peek_mode(path: Path) -> str | None:
    """A file's PIL mode from its header (None if unreadable: reading it whole names the fault)."""
    try:
        with Image.open(path) as im:
            return im.mode
    except Exception:
        return None


def open_image(path: Path, hasher) -> Image.Image:
    """Read an image file fully, feeding its bytes to `hasher`; DatasetError naming it if unreadable."""
    try:
        data = path.read_bytes()
        pil = Image.open(io.BytesIO(data))
        pil.load()
    except Exception as e:  # PIL raises several kinds for corrupt/truncated files
        raise DatasetError(f"{path}: unreadable image ({type(e).__name__}: {' '.join(str(e).split())[:100]})") from None
    hasher.update(path.name.encode() + b"\0" + data)
    return pil
