"""TensorBoard logging: a thin :class:`SummaryWriter` over ``tensorboardX.SummaryWriter``.

tensorboardX writes standard event files (readable by ``tensorboard --logdir``) with its own protos, so
logging never imports TensorFlow.
"""

from __future__ import annotations

import io
import os
from typing import Any, Mapping

import numpy as np
import tensorboardX

__all__ = ["SummaryWriter"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _to_float(value: Any) -> float:
    """Python float of a Python/numpy/JAX scalar (or size-1 array)."""
    if isinstance(value, (int, float)):
        return float(value)
    return float(np.asarray(value).reshape(()).item())


def _decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("image bytes must be PNG-encoded")
    image = Image.open(io.BytesIO(data))
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA")
    return np.asarray(image)


def _hwc_uint8(image: Any) -> np.ndarray:
    """A uint8 ``[H, W, 1|3|4]`` array of PNG bytes, a uint8 ``[H, W]``/``[H, W, 1|3|4]`` array or a Figure."""
    if hasattr(image, "savefig"):  # matplotlib Figure (pyplot or not)
        buf = io.BytesIO()
        image.savefig(buf, format="png")
        image = buf.getvalue()
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = _decode_png(bytes(image))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image arrays must be [H, W] or [H, W, 1|3|4], got shape {array.shape}")
    return array


class SummaryWriter:
    """Writes scalars, images and text to a TensorBoard event file in ``logdir``.

    ``enabled=False`` makes every method a no-op and creates nothing (use it on JAX processes other than 0 in
    multi-host runs). Events are buffered and written by a background thread; :meth:`flush` forces them to disk.
    Scalars are stored as float32; text logged under ``tag`` appears as ``tag/text_summary`` (tensorboardX's naming).
    """

    def __init__(self, logdir: str | os.PathLike, enabled: bool = True, *, flush_secs: float = 120.0,
                 max_queue: int = 10):
        self.logdir = os.fspath(logdir)
        self.enabled = bool(enabled)
        self._closed = False
        self._writer = None
        if self.enabled:
            self._writer = tensorboardX.SummaryWriter(self.logdir, max_queue=max_queue, flush_secs=flush_secs)

    def _active(self) -> bool:
        # tensorboardX silently reopens a closed writer on the next add_*; refuse instead.
        if self.enabled and self._closed:
            raise RuntimeError("SummaryWriter is closed")
        return self.enabled

    def scalar(self, tag: str, value: Any, step: int) -> None:
        """Log one scalar (a Python/numpy/JAX scalar or size-1 array)."""
        if self._active():
            self._writer.add_scalar(str(tag), _to_float(value), int(step))

    def scalars(self, mapping: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Log every ``name: value`` of ``mapping`` at ``step`` as tag ``prefix/name``."""
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        for name, value in mapping.items():
            self.scalar(f"{prefix}{name}", value, step)

    def image(self, tag: str, image: Any, step: int) -> None:
        """Log an image: PNG bytes, a uint8 ``[H, W]``/``[H, W, 1|3|4]`` array, or a matplotlib Figure."""
        if self._active():
            self._writer.add_image(str(tag), _hwc_uint8(image), int(step), dataformats="HWC")

    def text(self, tag: str, string: str, step: int) -> None:
        """Log a (markdown) string to the text plugin."""
        if self._active():
            self._writer.add_text(str(tag), str(string), int(step))

    def flush(self) -> None:
        """Write buffered events to disk."""
        if self.enabled and not self._closed:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        if self.enabled and not self._closed:
            self._writer.close()
        self._closed = True

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
