"""A pydicom decoder plugin for 12-bit JPEG Extended (process 4) using imagecodecs.

pydicom's permissive decoders stop at 8-bit JPEG Extended (Pillow, and pydicom's GDCM plugin);
its 12-bit decoder is GPL-licensed (pylibjpeg-libjpeg). imagecodecs (BSD-3-Clause, libjpeg-turbo
3) decodes 12-bit JPEG, and is added to pydicom through its documented plugin interface
(``Decoder.add_plugin``) by :func:`register`.
"""

from __future__ import annotations

from pydicom import uid
from pydicom.pixels.decoders.base import DecodeRunner

PLUGIN_LABEL = "l3seg-imagecodecs"
DECODER_DEPENDENCIES = {uid.JPEGExtended12Bit: ("numpy", "imagecodecs")}


def is_available(uid_: str) -> bool:
    """Whether imagecodecs with a JPEG codec is installed (for the syntaxes above)."""
    if uid_ not in DECODER_DEPENDENCIES:
        return False
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEG8.available)


def _decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One JPEG frame -> little-endian pixel bytes of ``runner.bits_allocated`` bits."""
    import imagecodecs
    import numpy as np

    if runner.samples_per_pixel != 1:
        raise NotImplementedError("l3seg's imagecodecs plugin decodes single-sample (greyscale) JPEG only")
    arr = imagecodecs.jpeg8_decode(src)
    dtype = np.dtype(f"<u{runner.bits_allocated // 8}")
    return np.ascontiguousarray(arr.astype(dtype)).tobytes()


def register() -> None:
    """Add the plugin to pydicom's JPEG Extended decoder (once)."""
    from pydicom.pixels import get_decoder

    decoder = get_decoder(uid.JPEGExtended12Bit)
    if PLUGIN_LABEL not in decoder.available_plugins and PLUGIN_LABEL not in getattr(decoder, "_unavailable", {}):
        decoder.add_plugin(PLUGIN_LABEL, ("l3seg_lib.imageio.codecs", "_decode_frame"))
