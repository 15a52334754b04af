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
                              "out_of_window": 0, "over_budget": 0}


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


def test_lossless_memory_is_bounded_in_bytes() -> None:
    r = Resequencer({"a": False, "b": False}, max_bytes=100)
    assert _seqs(r.push("a", 1, 1, 0.0, nbytes=60)) == []
    assert _seqs(r.push("a", 2, 2, 0.0, nbytes=40)) == []  # exactly the budget
    assert _seqs(r.push("a", 3, 3, 0.0, nbytes=1)) == []  # one byte over: refused, not held
    assert r.waiting("a") == 2 and r.held_bytes("a") == 100 and r.stats("a")["over_budget"] == 1
    assert _seqs(r.push("b", 1, 1, 0.0, nbytes=100)) == []  # the budget is per stream
    assert r.held_bytes() == 200
    # the frame waited for is delivered at once, so it is never held and never refused
    assert _seqs(r.push("a", 0, 0, 0.0, nbytes=10_000)) == [0, 1, 2]
    assert r.held_bytes("a") == 0 and r.held_bytes() == 100
    assert _seqs(r.push("a", 4, 4, 0.0, nbytes=101)) == []  # alone over the budget
    assert r.stats("a")["over_budget"] == 2 and r.stats("a")["skipped"] == 0
    assert _seqs(r.push("a", 4, 4, 0.0, nbytes=50)) == []  # the same seq again, now within budget
    r.end("a", 4, 1.0)  # ...and then beyond the end: dropped, its bytes with it
    assert r.held_bytes("a") == 0 and r.stats("a")["beyond_end"] == 1
    assert _seqs(r.flush()) == [1] and r.held_bytes() == 0


def test_live_memory_is_bounded_in_bytes() -> None:
    r = Resequencer({"cam": True}, max_bytes=100)
    assert _seqs(r.push("cam", 0, 0, 0.0, nbytes=80)) == [0]
    r.push("cam", 2, 2, 0.0, nbytes=50)
    r.push("cam", 3, 3, 0.0, nbytes=50)
    assert r.held_bytes("cam") == 100
    # over the budget: what is held goes out, and the stream jumps ahead to the new frame
    assert _seqs(r.push("cam", 6, 6, 0.1, nbytes=30)) == [2, 3, 6]
    assert r.stats("cam")["skipped"] == 1 + 2 and r.stats("cam")["over_budget"] == 0
    assert r.held_bytes() == 0
    r.push("cam", 8, 8, 0.2, nbytes=20)
    assert _seqs(r.poll(1.0)) == [8] and r.held_bytes("cam") == 0  # skipped by time: bytes freed too
    r.push("cam", 10, "old", 1.0, epoch=1, nbytes=40)
    assert _seqs(r.push("cam", 0, "new", 1.1, epoch=2, nbytes=40)) == [10, 0] and r.held_bytes() == 0


def test_without_a_byte_budget_nothing_changes() -> None:
    r = Resequencer({"a": False})
    for seq in range(1, 50):
        r.push("a", seq, seq, 0.0, nbytes=1 << 30)
    assert r.waiting("a") == 49 and r.stats("a")["over_budget"] == 0 and r.held_bytes() == 49 << 30
    assert len(r.push("a", 0, 0, 0.0)) == 50 and r.held_bytes() == 0
