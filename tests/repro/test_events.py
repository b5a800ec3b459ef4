"""repro.events: TensorBoard event files that TensorBoard's own reader loads, value for value."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

pytest.importorskip("google_crc32c")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

from repro.events import EventWriter, open_event_writer

ROWS = [
    {"step": 1, "charts/episodic_return": 23.0, "charts/episodic_length": 23, "done": True},
    {"step": 40, "charts/episodic_return": 17.5, "losses/actor": -0.25},
    {"step": 41, "charts/episodic_return": float("nan"), "losses/actor": 1e30},
]


def _write(log_dir: Path) -> Path:
    writer = open_event_writer(log_dir)
    assert writer is not None
    for row in ROWS:
        writer.add_row(int(row["step"]), {k: v for k, v in row.items() if k != "step"})
    writer.close()
    return writer.path


def test_tensorboard_reads_every_scalar_of_every_row(tmp_path: Path) -> None:
    _write(tmp_path)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in ROWS:
        for k, v in row.items():
            if k != "step":
                expected.setdefault(k, []).append((int(row["step"]), float(v)))
    assert sorted(acc.Tags()["scalars"]) == sorted(expected)
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in points]
        for (_, value), (_, want) in zip(got, points, strict=True):
            # simple_value is float32, as with torch's SummaryWriter
            assert value == pytest.approx(want, rel=1e-7, nan_ok=True) or (
                want == 1e30 and value == pytest.approx(1e30, rel=1e-6)
            )


def test_records_carry_tensorboards_masked_crc32c(tmp_path: Path) -> None:
    data = _write(tmp_path).read_bytes()
    pos, records = 0, 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        body = data[pos + 12 : pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        assert header_crc == masked_crc32c(header)
        assert body_crc == masked_crc32c(body)
        pos += 16 + length
        records += 1
    assert pos == len(data)
    assert records == 1 + len(ROWS)  # the file-version event, then one event per row


def test_a_second_writer_never_reopens_an_existing_file(tmp_path: Path) -> None:
    first = _write(tmp_path)
    before = first.read_bytes()
    second = EventWriter(tmp_path)
    second.add_row(99, {"x": 1.0})
    second.close()
    assert second.path != first
    assert first.read_bytes() == before
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [e.step for e in acc.Scalars("x")] == [99]


@pytest.mark.parametrize(
    "step, values",
    [
        (0, {"a": 0.0}),
        (7, {"charts/episodic_return": 23.0, "losses/actor": -0.25, "x": float("nan")}),
        (2**40, {"big": 1e39, "small": -1e39, "inf": float("inf"), "tiny": 1e-45}),
        (-3, {"t" * 200: 1.5, "ünïcode/tag": 2.0}),
        (5, {}),
    ],
)
def test_row_bytes_equal_protobufs_serialisation(step: int, values: dict[str, float]) -> None:
    """The directly written Event is byte for byte what TensorBoard's protobuf classes write."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    from repro.events import _scalar_event

    for wall_time in (0.0, 1796071044.125):
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        want = Event(wall_time=wall_time, step=step, summary=summary).SerializeToString()
        assert _scalar_event(wall_time, step, values) == want
