"""The bragg_dask page's pieces without a cluster: tile previews, the colour picture, the PNG encoder and
the run's figures as the scheduler keeps them (bragg_dask.dashboard.image, .board)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bragg_dask.dashboard import board as bboard
from bragg_dask.dashboard import image


def _pool_whole(frame: np.ndarray, k: int) -> np.ndarray:
    h, w = frame.shape
    ph, pw = image.preview_shape(frame.shape, k)
    pad = np.full((ph * k, pw * k), -np.inf, dtype=np.float32)
    pad[:h, :w] = frame
    return image.encode(pad.reshape(ph, k, pw, k).max(axis=(1, 3)))


@pytest.mark.parametrize("tile", [1, 7, 50, 64, 300])
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_tiles_pooled_in_any_order_make_the_frame_pooled_whole(tile, k):
    rng = np.random.default_rng(tile * 10 + k)
    frame = rng.gamma(0.3, 50.0, size=(61 if tile == 1 else 300, 257)).astype(np.float32)
    rendered = rng.random(frame.shape) > 0.1
    expect = _pool_whole(np.where(rendered, frame, -np.inf).astype(np.float32), k)
    preview = np.zeros(image.preview_shape(frame.shape, k), dtype=np.uint8)
    origins = [(s0, f0) for s0 in range(0, frame.shape[0], tile) for f0 in range(0, frame.shape[1], tile)]
    for idx in rng.permutation(len(origins)):
        s0, f0 = origins[idx]
        part = frame[s0 : s0 + tile, f0 : f0 + tile]
        r0, c0, block = image.tile_block(part, s0, f0, k, rendered[s0 : s0 + tile, f0 : f0 + tile])
        assert block.dtype == np.uint8
        image.merge_block(preview, r0, c0, block)
    np.testing.assert_array_equal(preview, expect)


def test_codes_keep_the_order_of_intensities_within_an_eighth_of_an_octave():
    v = np.array([0.0, 0.5, 1.0, 3.0, 10.0, 1e3, 1e6, 3e9, 1e12, -np.inf], dtype=np.float32)
    c = image.encode(v)
    assert c[-1] == image.NOTHING and (c[:-1] >= 2).all() and (np.diff(c[:-1].astype(int)) >= 0).all()
    assert c[0] == 2 and c[-2] == 255  # zero photons; beyond the scale, its top
    back = image.photons(c[:-2])
    ok = np.abs(np.log2(1 + back) - np.log2(1 + v[:-2].astype(np.float64))) <= 0.5 / image.STEPS_PER_OCTAVE + 1e-9
    assert ok.all(), (v, back)
    assert np.isnan(image.photons(np.array([image.NOT_REACHED]))).all()


def test_pooling_brings_the_longer_side_within_the_limit():
    for shape in [(1, 1), (512, 512), (513, 100), (2527, 2463), (4371, 4150)]:
        k = image.pooling(shape)
        assert max(image.preview_shape(shape, k)) <= image.PREVIEW_MAX
        assert k == 1 or max(image.preview_shape(shape, k - 1)) > image.PREVIEW_MAX


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_png_decodes_to_the_same_pixels():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, size=(5, 300), dtype=np.uint8)
    np.testing.assert_array_equal(_decode(image.png(rgb)), rgb)
    np.testing.assert_array_equal(_decode(image.png(grey)), grey)
    with pytest.raises(ValueError):
        image.png(np.zeros((4, 4, 4), np.uint8))


def test_colour_log_scale_hatches_what_is_not_done_and_blacks_out_what_renders_nothing():
    p = image.encode(np.array([[0.0, 9.0, 99.0, 0], [-np.inf, 999.0, 0, 0]], dtype=np.float32))
    p[0, 3] = p[1, 2] = p[1, 3] = image.NOT_REACHED
    rgb = image.colour(p)
    assert rgb.shape == (2, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[1, 0], (0, 0, 0))  # nothing rendered
    np.testing.assert_array_equal(rgb[1, 1], image.LUT[255])  # the maximum
    np.testing.assert_array_equal(rgb[0, 0], image.LUT[0])  # zero photons
    # log2(1 + 9) / log2(1 + 999) of the scale, in eighths of an octave
    np.testing.assert_array_equal(rgb[0, 1], image.LUT[int(p[0, 1] - 2) * 255 // int(p[1, 1] - 2)])
    assert abs(int(p[0, 1] - 2) * 255 // int(p[1, 1] - 2) - 255 / 3) < 3
    hatch = {tuple(c) for c in image._TODO}
    assert {tuple(rgb[0, 3]), tuple(rgb[1, 2]), tuple(rgb[1, 3])} <= hatch
    # a tile not done is hatched even where a neighbouring tile's block reached its pixels
    assert tuple(image.colour(p, [(0, 1, 0, 2)])[0, 1]) in hatch


def test_shrink_keeps_the_maximum_and_what_is_not_done():
    p = np.zeros((300, 130), dtype=np.uint8)
    p[:150] = (np.arange(150 * 130) % 254 + 2).reshape(150, 130)
    t = image.shrink(p, 64)
    assert max(t.shape) <= 64
    assert t.max() == p.max() and (t[-1] == image.NOT_REACHED).all() and (t[0] >= 2).all()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _run(clock, frames=3, grid=(2, 2), before=None, todo=None):
    shape = (grid[0] * 10, grid[1] * 10)
    done = np.zeros((frames, *grid), bool) if before is None else before
    return {
        "kind": "run",
        "run": "r1",
        "title": "t",
        "shape": list(shape),
        "tile": [10, 10],
        "grid": list(grid),
        "frames": frames,
        "k": 1,
        "evals_per_tile": 1000,
        "todo": int(done.size - done.sum()) if todo is None else todo,
        "done_bits": np.packbits(done.reshape(-1)).tobytes(),
        "started": clock(),
    }


def _tile(f, i, j, value=1.0, seconds=0.5, block=True, stored=False):
    """A task's report of one tile (with its picture unless ``block`` is False)."""
    item = {"frame": f, "tile": [i, j], "seconds": seconds, "evals": 1000}
    if block:
        codes = image.encode(np.full((10, 10), value, dtype=np.float32))
        item.update(origin=[i * 10, j * 10], bshape=[10, 10], block=codes.tobytes())
    return {"kind": "tiles", "run": "r1", "items": [item], "stored": [[f, i, j]] if stored else []}


def test_a_run_counts_tiles_frames_rate_and_time_left():
    clock = Clock()
    before = np.zeros((3, 2, 2), bool)
    before[1] = True  # frame 1 was done by an earlier run
    b = bboard.Board(clock)
    b.event(_run(clock, before=before))
    v = b.get()
    s = v.summary()
    assert (s["tiles_total"], s["tiles_before"], s["tiles_todo"], s["frames_done"]) == (12, 4, 8, 1)
    assert s["eta"] is None and s["rate"] == 0.0 and s["current_frame"] is None
    clock.t += 1.0
    b.event(_tile(0, 0, 0, 5.0))
    b.event(_tile(0, 0, 0, 5.0))  # a retried task reports its tile again: counted once
    clock.t += 1.0
    b.event(_tile(0, 0, 1))
    b.event({"kind": "tiles", "run": "r1", "items": [], "stored": [[0, 0, 0], [0, 0, 1]]})
    s = v.summary()
    assert s["tiles_computed"] == 2 and s["tiles_stored"] == 2 and s["tiles_complete"] == 6
    # the first tile started 0.5 s before it landed: 2000 evaluations in 1.5 s
    assert s["rate"] == pytest.approx(2000 / 1.5) and s["eta"] == pytest.approx(6 * 1000 / (2000 / 1.5))
    assert v.todo_rects(0) == [(10, 20, 0, 10), (10, 20, 10, 20)]
    assert s["frames_done"] == 1 and s["thumbs"] == []
    b.event(_tile(0, 1, 0))
    b.event(_tile(0, 1, 1, 99.0))
    s = v.summary()
    assert s["frames_done"] == 2 and s["thumbs"] == [0] and s["current_frame"] == 0
    rgb = _decode(v.frame_png())
    assert rgb.shape == (20, 20, 3) and v.picture()[0][0] == 0
    np.testing.assert_array_equal(rgb[15, 15], image.LUT[255])
    np.testing.assert_array_equal(
        rgb[5, 5], image.LUT[int(image.encode(np.float32(5.0)) - 2) * 255 // int(image.encode(np.float32(99.0)) - 2)]
    )
    assert _decode(v.thumb_png(0)).shape == (20, 20, 3) and v.thumb_png(2) is None
    for i in range(2):
        for j in range(2):
            b.event(_tile(2, i, j))
    b.event({"kind": "phase", "run": "r1", "phase": "complete"})
    s = v.summary()
    assert s["frames_done"] == 3 and s["thumbs"] == [2, 0] and s["eta"] == 0.0 and s["phase"] == "complete"
    clock.t += 100.0  # a finished run's rate and elapsed time stay what they were
    assert v.summary()["rate"] == pytest.approx(s["rate"]) and v.summary()["elapsed"] == s["elapsed"]


def test_events_out_of_range_or_of_unknown_runs_change_nothing():
    clock = Clock()
    b = bboard.Board(clock)
    b.event(_run(clock))
    for bad in [
        _tile(3, 0, 0),
        _tile(0, 2, 0),
        _tile(-1, 0, 0),
        {"kind": "tiles", "run": "other"},
        None,
        "text",
        {"kind": "mystery", "run": "r1"},
    ]:
        b.event(bad)
    v = b.get()
    assert v.summary()["tiles_computed"] == 0 and v.previews == {} and v.current is None


def test_memory_is_bounded_however_long_the_run():
    clock = Clock()
    b = bboard.Board(clock)
    n = 500
    b.event(_run(clock, frames=n))
    for f in range(n):
        b.event(_tile(f, 0, 0))
        clock.t += 0.5
        if f % 2 == 0:  # every other frame finishes
            for i, j in [(0, 1), (1, 0), (1, 1)]:
                b.event(_tile(f, i, j))
    v = b.get()
    assert len(v.previews) <= bboard.FRAMES_IN_FLIGHT and len(v.thumbs) == 2 * bboard.THUMBS
    assert len(v.history) <= bboard.HISTORY and v.frames_done == n // 2
    assert v.summary()["thumbs"] == [n - 2 - 2 * i for i in range(bboard.THUMBS)]
    for r in range(bboard.RUNS + 3):
        msg = _run(clock)
        msg["run"] = f"run{r}"
        b.event(msg)
    assert list(b.runs) == [f"run{r}" for r in range(3, bboard.RUNS + 3)] and b.get().id == f"run{bboard.RUNS + 2}"


def test_the_frame_picture_is_made_again_only_when_it_changes():
    clock = Clock()
    b = bboard.Board(clock)
    b.event(_run(clock, frames=2))
    v = b.get()
    b.event(_tile(0, 0, 0, 7.0))
    first = v.frame_png()
    assert v.frame_png() is first  # asked again with nothing new: the same bytes, not made again
    b.event(_tile(1, 0, 0, block=False))  # another frame's tile, not pictured: the picture stands
    assert v.frame_png() is first
    b.event(_tile(0, 1, 1, 70.0))
    second = v.frame_png()
    assert second is not first
    pic = _decode(second)
    hatch = {tuple(c) for c in image._TODO}
    assert tuple(pic[5, 5]) not in hatch and tuple(pic[15, 15]) not in hatch
    assert tuple(pic[5, 15]) in hatch and tuple(pic[15, 5]) in hatch  # the two tiles not done


def test_tiles_reported_without_their_picture_count_but_show_nothing():
    clock = Clock()
    b = bboard.Board(clock)
    b.event(_run(clock, frames=2))
    for i in range(2):
        for j in range(2):
            b.event(_tile(0, i, j, block=False, stored=True))
    v = b.get()
    s = v.summary()
    assert s["tiles_computed"] == s["tiles_complete"] == 4 and s["frames_done"] == 1
    assert s["thumbs"] == [] and s["current_frame"] is None and v.previews == {}
    b.event(_tile(1, 0, 0, 3.0))
    assert v.summary()["current_frame"] == 1


class _Result:
    def __init__(self, shape):
        self.image = np.ones(shape, np.float32)
        self.rendered = np.ones(shape, bool)


def test_a_task_pictures_every_tile_of_a_single_frame_and_a_dataset_frame_a_second(monkeypatch):
    from bragg_dask.dashboard import report

    sent, now = [], [100.0]
    monkeypatch.setattr(report, "emit", lambda msg: sent.append((msg["items"], msg["stored"])))
    monkeypatch.setattr(report.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(report, "SHOWN", report._Shown())
    single = report.TaskReport(("one", 2, 1))
    for j in range(3):
        single.tile(0, (0, j), (0, 10 * j), _Result((10, 10)), 0.1, 100)
    assert all("block" in item for item in single.items) and sent == []  # within FLUSH_S: one event at the end
    single.stored([(0, (0, j)) for j in range(3)])
    assert len(sent) == 1 and len(sent[0][0]) == 3 and sent[0][1] == [[0, 0, 0], [0, 0, 1], [0, 0, 2]]
    sent.clear()
    pictured = []
    for f in range(10):  # one whole frame (2 tiles) a task, a task every 0.3 s
        task = report.TaskReport(("many", 2, 10))
        for j in range(2):
            task.tile(f, (0, j), (0, 10 * j), _Result((10, 10)), 0.1, 100)
        task.stored([(f, (0, 0)), (f, (0, 1))])
        items = sent[-1][0]
        assert len({"block" in item for item in items}) == 1  # a frame is on show whole, or not at all
        if "block" in items[0]:
            pictured.append(f)
        now[0] += 0.3
    assert pictured == [0, 4, 8]  # FRAME_EVERY_S = 1 s apart
    sent.clear()
    long = report.TaskReport(("long", 2, 1))  # a long task's tiles go out once FLUSH_S has passed
    for j in range(4):
        long.tile(0, (0, j), (0, 10 * j), _Result((10, 10)), 0.3, 100)  # at 0, 0.3, 0.6 (sent), 0.9 s
        now[0] += 0.3
    long.stored([(0, (0, j)) for j in range(4)])
    assert [(len(items), len(stored)) for items, stored in sent] == [(3, 0), (1, 4)]
