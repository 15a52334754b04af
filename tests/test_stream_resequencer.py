"""Resequencing per source: order restored, duplicates dropped, live gaps skipped after a wait."""

from __future__ import annotations

from pipeline.stream.resequencer import Resequencer


def _seqs(ready: list) -> list[int]:
    return [seq for _, seq, _ in ready]


def test_lossless_reorders_and_drops_duplicates() -> None:
    r = Resequencer({"a": False, "b": False})
    assert _seqs(r.push("a", 1, "a1", 0.0)) == []
    assert _seqs(r.push("b", 0, "b0", 0.0)) == [0]
    assert _seqs(r.push("a", 2, "a2", 0.0)) == []
    assert _seqs(r.push("a", 1, "dup", 0.0)) == []  # a duplicate while waiting
    ready = r.push("a", 0, "a0", 0.0)
    assert [item for _, _, item in ready] == ["a0", "a1", "a2"]
    assert _seqs(r.push("a", 1, "late dup", 0.0)) == []  # a duplicate after delivery
    assert r.stats("a")["duplicates"] == 2 and r.stats("a")["delivered"] == 3
    assert not r.done("a")
    r.end("a", 3, 1.0)
    assert r.done("a") and not r.done("b")
    assert r.poll(1000.0) == []  # lossless never skips


def test_lossless_end_before_last_frames_and_beyond_end() -> None:
    r = Resequencer({"a": False})
    r.push("a", 1, 1, 0.0)
    r.end("a", 2, 0.0)
    assert not r.done("a")
    assert _seqs(r.push("a", 5, 5, 0.0)) == []  # past the end: dropped
    assert _seqs(r.push("a", 0, 0, 0.0)) == [0, 1] and r.done("a")
    assert r.stats("a")["beyond_end"] == 1


def test_live_skips_a_missing_frame_after_max_wait() -> None:
    r = Resequencer({"cam": True}, max_wait_s=0.5)
    assert _seqs(r.push("cam", 0, 0, 0.0)) == [0]
    assert _seqs(r.push("cam", 2, 2, 0.1)) == []
    assert _seqs(r.poll(0.3)) == []
    assert _seqs(r.poll(0.7)) == [2]
    assert _seqs(r.push("cam", 1, 1, 0.8)) == []  # late: dropped, order kept
    assert r.stats("cam") == {"delivered": 2, "duplicates": 0, "late": 1, "skipped": 1, "beyond_end": 0,
                              "out_of_window": 0}


def test_live_new_epoch_restarts_numbering() -> None:
    r = Resequencer({"cam": True})
    r.push("cam", 0, "old0", 0.0, epoch=1)
    r.push("cam", 2, "old2", 0.0, epoch=1)
    ready = r.push("cam", 0, "new0", 0.1, epoch=2)
    assert [item for _, _, item in ready] == ["old2", "new0"]


def test_memory_is_bounded() -> None:
    r = Resequencer({"a": False, "cam": True}, max_buffer=10)
    for seq in range(1, 100):
        r.push("a", seq, seq, 0.0)  # frame 0 never comes: only the window is held, the rest refused
    assert r.waiting("a") == 9 and r.stats("a")["out_of_window"] == 90 and r.stats("a")["skipped"] == 0
    assert _seqs(r.push("a", 0, 0, 0.0)) == list(range(10))
    r.push("cam", 0, 0, 0.0)
    r.push("cam", 2, 2, 0.0)
    assert _seqs(r.push("cam", 50, 50, 0.0)) == [2, 50]  # live: jump ahead to the new frame
    assert r.stats("cam")["skipped"] == 1 + 47


def test_flush_delivers_everything_in_order() -> None:
    r = Resequencer({"a": False, "b": True})
    r.push("a", 3, 3, 0.0)
    r.push("a", 1, 1, 0.0)
    r.push("b", 4, 4, 0.0)
    assert sorted(_seqs(r.flush())) == [1, 3, 4]
    assert r.waiting("a") == r.waiting("b") == 0
