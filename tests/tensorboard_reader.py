"""Reads a TensorBoard run back (one directory of event files) with TensorBoard's own ``EventAccumulator``."""

import os

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def _accumulator(logdir, **size_guidance) -> EventAccumulator:
    logdir = os.fspath(logdir)
    if not os.path.exists(logdir):
        raise FileNotFoundError(logdir)
    guidance = {"scalars": 0, "images": 1, "tensors": 1, "histograms": 1, "distributions": 1, "audio": 1}
    guidance.update(size_guidance)  # 0 keeps every event
    return EventAccumulator(logdir, size_guidance=guidance).Reload()


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """All scalars in ``logdir``: ``{tag: [(step, value), ...]}``."""
    acc = _accumulator(logdir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_image_tags(logdir) -> list[str]:
    """Sorted tags of the images logged in ``logdir``."""
    return sorted(_accumulator(logdir).Tags()["images"])


def read_text(logdir) -> dict[str, list[tuple[int, str]]]:
    """Text-plugin strings in ``logdir``, under their stored tags: ``{tag: [(step, string), ...]}``."""
    acc = _accumulator(logdir, tensors=0)
    try:
        tags = acc.PluginTagToContent("text")
    except KeyError:  # no text logged
        tags = {}
    return {tag: [(e.step, e.tensor_proto.string_val[0].decode("utf-8")) for e in acc.Tensors(tag)]
            for tag in sorted(tags)}
