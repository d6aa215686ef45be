"""8-bit windowed PNG exports (Pillow); HU reconstructed from the export window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import CTImage, ImageMeta, ReadLimits, check_claimed_size, check_pixel_spacing


def read_png_array(path: str | Path, what: str, limits: ReadLimits | None = None) -> np.ndarray:
    """A single-channel PNG as an integer array; colour images are refused, and so is a PNG whose
    header (IHDR width x height) exceeds ``limits``, before it is decoded."""
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "file not found")
    try:
        with Image.open(path) as im:
            width, height = im.size
            check_claimed_size(path, (height, width), len(im.getbands()) or 1, limits,
                               what="the PNG header (IHDR height x width)")
            im.load()
            mode = im.mode
            arr = np.array(im)
    except L3SegInputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise L3SegInputError(path, f"corrupt or unreadable PNG ({exc})") from None
    if mode in ("RGB", "RGBA", "LA"):
        chans = arr[..., :3] if mode != "LA" else arr[..., :1]
        if chans.shape[-1] == 3 and not (np.array_equal(chans[..., 0], chans[..., 1]) and np.array_equal(chans[..., 0], chans[..., 2])):
            raise L3SegInputError(path, f"colour PNG ({mode}); the {what} must be a single-channel (grey) PNG")
        arr = chans[..., 0]
    elif mode not in ("L", "P", "I", "I;16", "I;16B", "1"):
        raise L3SegInputError(path, f"unsupported PNG mode {mode!r} for the {what}")
    return arr.astype(np.int64)


def read_png(
    path: str | Path,
    spacing_mm: tuple[float, float] | None,
    window_hu: tuple[float, float] | None,
    patient_id: str | None = None,
    limits: ReadLimits | None = None,
) -> CTImage:
    """Read an 8-bit windowed PNG export; HU are reconstructed as lo + v/255 * (hi - lo).

    PNG carries no geometry, so ``spacing_mm`` (row, col) and the export window must be given
    (the manifest's ``spacing_row_mm, spacing_col_mm, window_lo_hu, window_hi_hu`` columns).
    """
    path = Path(path)
    if spacing_mm is None or any(s is None or not np.isfinite(s) for s in spacing_mm):
        raise L3SegInputError(path, "PNG has no pixel spacing: give spacing_row_mm and spacing_col_mm in the manifest")
    check_pixel_spacing(spacing_mm, str(path))
    if window_hu is None or any(w is None or not np.isfinite(w) for w in window_hu):
        raise L3SegInputError(path, "PNG gray values cannot be turned into HU without the export window: "
                                    "give window_lo_hu and window_hi_hu in the manifest")
    lo, hi = float(window_hu[0]), float(window_hu[1])
    if not lo < hi:
        raise L3SegInputError(path, f"export window [{lo}, {hi}] HU is empty")
    arr = read_png_array(path, "image", limits)
    if arr.max(initial=0) > 255:
        raise L3SegInputError(path, "expected an 8-bit PNG export (values 0-255)")
    hu = (lo + arr.astype(np.float32) / 255.0 * (hi - lo)).astype(np.float32)
    row_mm, col_mm = float(spacing_mm[0]), float(spacing_mm[1])
    affine = np.diag([-col_mm, -row_mm, 1.0, 1.0])
    return CTImage(
        hu=hu,
        patient_id=patient_id or path.stem,
        slice_id=path.stem,
        source=str(path),
        affine=affine,
        hu_calibrated=False,
        meta=ImageMeta(png_window_hu=[lo, hi]),
    )


