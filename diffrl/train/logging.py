"""TensorBoard logging without TensorFlow.

:class:`SummaryWriter` writes standard TensorBoard event files (readable by ``tensorboard --logdir``) through the
``tensorboard`` package's own ``EventFileWriter`` and protos; :func:`read_scalars`, :func:`read_image_tags` and
:func:`read_text` read a run back. TensorFlow is never imported: before ``tensorboard.compat.tf`` is first
resolved, this module registers ``tensorboard.compat.notf``, which makes TensorBoard use its bundled TF stub even
when TensorFlow is installed.
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import sys
import time
import types
from typing import Any, Mapping

import numpy as np


def _force_tensorflow_stub() -> None:
    # tensorboard.compat.tf imports tensorflow unless tensorboard.compat.notf is importable (the
    # //tensorboard/compat:no_tensorflow mechanism); if tensorflow is already loaded there is nothing to avoid.
    name = "tensorboard.compat.notf"
    if "tensorflow" in sys.modules or name in sys.modules:
        return
    if importlib.util.find_spec(name) is None:
        sys.modules[name] = types.ModuleType(name, "Marker: make tensorboard.compat.tf the TensorFlow stub.")


_force_tensorflow_stub()

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: E402

__all__ = ["SummaryWriter", "read_image_tags", "read_scalars", "read_text"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels


def _to_float(value: Any) -> float:
    """Python float of a Python/numpy/JAX scalar (or size-1 array)."""
    if isinstance(value, (int, float)):
        return float(value)
    return float(np.asarray(value).reshape(()).item())


def _png_bytes(image: Any) -> bytes:
    """PNG bytes of PNG bytes, a uint8 ``[H, W]``/``[H, W, 1|3|4]`` array or a matplotlib Figure."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data.startswith(_PNG_SIGNATURE):
            raise ValueError("image bytes must be PNG-encoded")
        return data
    buf = io.BytesIO()
    if hasattr(image, "savefig"):  # matplotlib Figure (pyplot or not)
        image.savefig(buf, format="png")
        return buf.getvalue()
    import matplotlib.image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        matplotlib.image.imsave(buf, array, cmap="gray", vmin=0, vmax=255, format="png")
    elif array.ndim == 3 and array.shape[-1] in (3, 4):
        matplotlib.image.imsave(buf, array, format="png")
    else:
        raise ValueError(f"image arrays must be [H, W] or [H, W, 1|3|4], got shape {array.shape}")
    return buf.getvalue()


class SummaryWriter:
    """Writes scalars, images and text to a TensorBoard event file in ``logdir``.

    ``enabled=False`` makes every method a no-op and creates nothing (use it on JAX processes other than 0 in
    multi-host runs). Events are buffered and written by a background thread; :meth:`flush` forces them to disk.
    """

    def __init__(self, logdir: str | os.PathLike, enabled: bool = True, *, flush_secs: float = 120.0,
                 max_queue: int = 10):
        self.logdir = os.fspath(logdir)
        self.enabled = bool(enabled)
        self._closed = False
        self._tags_with_metadata: set[str] = set()
        self._writer = None
        if self.enabled:
            self._writer = EventFileWriter(self.logdir, max_queue_size=max_queue, flush_secs=flush_secs)

    def _write(self, values: list, step: int) -> None:
        if self._closed:
            raise RuntimeError("SummaryWriter is closed")
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values))
        self._writer.add_event(event)

    def scalar(self, tag: str, value: Any, step: int) -> None:
        """Log one scalar (stored as float32, as TensorBoard does)."""
        if self.enabled:
            self._write([summary_pb2.Summary.Value(tag=str(tag), simple_value=_to_float(value))], step)

    def scalars(self, mapping: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Log every ``name: value`` of ``mapping`` at ``step`` as tag ``prefix/name`` (one event)."""
        if not self.enabled or not mapping:
            return
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        values = [summary_pb2.Summary.Value(tag=f"{prefix}{k}", simple_value=_to_float(v)) for k, v in mapping.items()]
        self._write(values, step)

    def image(self, tag: str, image: Any, step: int) -> None:
        """Log an image: PNG bytes, a uint8 ``[H, W, 3|4]`` (or grey ``[H, W]``) array, or a matplotlib Figure."""
        if not self.enabled:
            return
        png = _png_bytes(image)
        width, height = struct.unpack(">II", png[16:24])
        summary_image = summary_pb2.Summary.Image(
            height=height, width=width, colorspace=_PNG_CHANNELS.get(png[25], 0), encoded_image_string=png
        )
        self._write([summary_pb2.Summary.Value(tag=str(tag), image=summary_image)], step)

    def text(self, tag: str, string: str, step: int) -> None:
        """Log a string (markdown) in the text plugin's format (a string tensor with ``plugin_name="text"``)."""
        if not self.enabled:
            return
        tag = str(tag)
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
            string_val=[str(string).encode("utf-8")],
        )
        value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
        if tag not in self._tags_with_metadata:  # as TF's writers: metadata on a tag's first value only
            value.metadata.CopyFrom(_text_metadata())
            self._tags_with_metadata.add(tag)
        self._write([value], step)

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


def _text_metadata() -> summary_pb2.SummaryMetadata:
    from tensorboard.plugins.text import metadata

    return metadata.create_summary_metadata(display_name=None, description=None)


def _accumulator(logdir, **size_guidance):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = os.fspath(logdir)
    if not os.path.exists(logdir):
        raise FileNotFoundError(logdir)
    guidance = {"scalars": 0, "images": 1, "tensors": 1, "histograms": 1, "distributions": 1, "audio": 1}
    guidance.update(size_guidance)
    return EventAccumulator(logdir, size_guidance=guidance).Reload()


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """All scalars of the event files directly in ``logdir`` (one run): ``{tag: [(step, value), ...]}``."""
    acc = _accumulator(logdir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_image_tags(logdir: str | os.PathLike) -> list[str]:
    """Tags of the images logged in ``logdir``."""
    return sorted(_accumulator(logdir).Tags()["images"])


def read_text(logdir: str | os.PathLike) -> dict[str, list[tuple[int, str]]]:
    """Text-plugin strings logged in ``logdir``: ``{tag: [(step, string), ...]}``."""
    acc = _accumulator(logdir, tensors=0)
    try:
        tags = acc.PluginTagToContent("text")
    except KeyError:  # no text logged
        tags = {}
    out = {}
    for tag in sorted(tags):
        out[tag] = [(e.step, e.tensor_proto.string_val[0].decode("utf-8")) for e in acc.Tensors(tag)]
    return out
