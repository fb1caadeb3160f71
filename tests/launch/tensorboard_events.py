"""Read a run's TensorBoard event files back with tensorboard's own EventAccumulator."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def read_events(tb_dir: str | Path) -> EventAccumulator:
    """Every event file under ``tb_dir`` (a requeued run adds a second one), nothing sampled away."""
    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def hparams_of(events: EventAccumulator) -> dict:
    """The run's hparams (name -> value) from its session_start_info record."""
    content = events.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    out = {}
    for name, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        out[name] = getattr(value, kind) if kind else None
    return out


def scalar_steps(events: EventAccumulator, tag: str) -> list[int]:
    return sorted(event.step for event in events.Scalars(tag))
