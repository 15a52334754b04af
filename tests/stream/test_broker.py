"""The broker's dispatch logic without sockets: credit, batching across streams, worker deaths."""

from __future__ import annotations

import numpy as np

from pipeline.stream import protocol as P
from pipeline.stream.broker import DispatchCore
from pipeline.stream.broker_ledger import DOWNSTREAM, SOURCE, WORKER
from pipeline.stream.detector_stage import DetectorCore


def _frame(source: str, seq: int) -> P.Message:
    image = np.full((8, 8, 3), seq % 255, np.uint8)
    return P.decode(P.encode(P.FRAME, source, [P.raw_part("image", image)], seq=seq, frame=seq, origin=f"{source}.mp4",
                             epoch=1, dropped=0, t={"capture": 0.0}))


def _result(frame_frames: list) -> P.Message:
    """What a worker sends back for a frame message (via the real DetectorCore and a fake detector)."""

    class Fake:
        def fingerprint(self) -> dict:
            return {"weights_sha256": "x", "class_names": ["a"], "feature_dim": 2}

        def detect(self, images: list, crops: bool = False) -> list:
            from pipeline.detections import Detections

            return [Detections(np.array([[0, 0, 4, 4]], np.float32), np.ones(1, np.float32), np.zeros(1),
                               np.zeros((1, 1), np.float32), np.zeros((1, 2), np.float32), np.zeros(1, np.int8),
                               class_names=("a",), image_size=(8, 8),
                               crops=[np.zeros((4, 4, 3), np.uint8)] if crops else None) for _ in images]

    [out] = DetectorCore(Fake(), "raw").process([P.decode(frame_frames)])
    return P.decode(out)


def _hello_source(core: DispatchCore, sid: str) -> None:
    core.source_message(sid.encode(), P.decode(P.control(P.HELLO, sid, role="source", epoch=1)), 0.0)


def _hello_worker(core: DispatchCore, wid: bytes, credit: int, now: float = 0.0) -> None:
    core.worker_message(wid, P.decode(P.control(P.HELLO, wid.decode(), role="worker", batch=credit)), now)
    core.worker_message(wid, P.decode(P.control(P.CREDIT, wid.decode(), n=credit)), now)


def _sent_to_workers(outputs: list) -> list[tuple[bytes, str, int]]:
    out = []
    for o in outputs:
        if o.to == WORKER:
            m = P.decode(o.frames)
            if m.type == P.FRAME:
                out.append((o.routing, m.topic, m.seq))
    return out


def _credit(outputs: list, sid: str) -> int:
    return sum(P.decode(o.frames).header["n"] for o in outputs
               if o.to == SOURCE and o.routing == sid.encode() and P.decode(o.frames).type == P.CREDIT)


def test_lossless_credit_batching_and_results() -> None:
    core = DispatchCore({"a": False, "b": False}, prefetch=2)
    _hello_source(core, "a")
    _hello_source(core, "b")
    assert _credit(core.take_outputs(), "a") == 2
    for sid in ("a", "b"):
        for seq in range(2):
            core.source_message(sid.encode(), _frame(sid, seq), 0.1)
    _hello_worker(core, b"w1", 3)
    sent = _sent_to_workers(outs := core.take_outputs())
    assert [s[1:] for s in sent] == [("a", 0), ("b", 0), ("a", 1)]  # round-robin across streams
    assert _credit(outs, "a") == 2  # queue freed: credit back to the sources
    # the worker's result goes downstream with the frame attached
    frame_msg = next(o for o in outs
                     if o.to == WORKER and P.decode(o.frames).seq == 0 and P.decode(o.frames).topic == "a")
    core.worker_message(b"w1", _result(frame_msg.frames), 0.2)
    [down] = [o for o in core.take_outputs() if o.to == DOWNSTREAM]
    message = P.decode(down.frames)
    assert message.type == P.DETECTIONS and message.has("image") and message.header["origin"] == "a.mp4"
    assert {"dispatch", "detect_end", "broker_out"} <= set(message.stamps)
    # EOS: acknowledged at once, passed on only when the source's frames are all done
    core.source_message(b"a", P.decode(P.control(P.EOS, "a", total=2, status="ok")), 0.3)
    outs = core.take_outputs()
    assert any(o.to == SOURCE and P.decode(o.frames).type == P.ACK for o in outs)
    assert not any(o.to == DOWNSTREAM for o in outs)
    a1 = P.encode(P.FRAME, "a", [P.raw_part("image", np.zeros((8, 8, 3), np.uint8))], seq=1, frame=1, origin="a",
                  epoch=1, dropped=0)
    core.worker_message(b"w1", _result(a1), 0.4)
    downs = [P.decode(o.frames) for o in core.take_outputs() if o.to == DOWNSTREAM]
    assert [(m.type, m.seq) for m in downs][0] == (P.DETECTIONS, 1) and downs[-1].type == P.EOS
    assert downs[-1].header["total"] == 2


def test_dead_worker_frames_go_to_another_worker_first() -> None:
    core = DispatchCore({"a": False}, prefetch=4, heartbeat_s=0.1, liveness=3)
    _hello_source(core, "a")
    for seq in range(4):
        core.source_message(b"a", _frame("a", seq), 0.0)
    _hello_worker(core, b"w1", 2, now=0.0)
    first = _sent_to_workers(core.take_outputs())
    assert first == [(b"w1", "a", 0), (b"w1", "a", 1)]
    _hello_worker(core, b"w2", 1, now=0.5)
    assert _sent_to_workers(core.take_outputs()) == [(b"w2", "a", 2)]
    core.tick(0.5)  # w1 silent for 0.5 s > 3 beats: dead
    core.worker_message(b"w2", P.decode(P.control(P.CREDIT, "w2", n=3)), 0.5)
    resent = _sent_to_workers(core.take_outputs())
    assert resent[:2] == [(b"w2", "a", 0), (b"w2", "a", 1)]  # its frames first, in order
    assert core.sources["a"].resent == 2
    # the "dead" worker's late result still counts once (w1 had the frame), and w1 is told to start over
    late = P.encode(P.FRAME, "a", [P.raw_part("image", np.zeros((8, 8, 3), np.uint8))], seq=0, frame=0, origin="a",
                    epoch=1, dropped=0)
    core.worker_message(b"w1", _result(late), 0.6)
    outs = core.take_outputs()
    assert sum(o.to == DOWNSTREAM for o in outs) == 1
    assert any(o.to == WORKER and o.routing == b"w1" and P.decode(o.frames).type == P.HELLO for o in outs)  # reset
    core.worker_message(b"w2", _result(late), 0.6)  # w2's copy of the same frame: a duplicate
    assert not any(o.to == DOWNSTREAM for o in core.take_outputs())
    assert core.events["duplicate_result"] == 1


def test_a_worker_that_keeps_frames_while_it_beats_loses_them_at_the_lease() -> None:
    # a peer with the workers' key: announces room, takes frames, answers every heartbeat, returns nothing
    core = DispatchCore({"a": False}, prefetch=4, heartbeat_s=1.0, liveness=3, lease_s=10.0)
    _hello_source(core, "a")
    for seq in range(3):
        core.source_message(b"a", _frame("a", seq), 0.0)
    _hello_worker(core, b"hoarder", 3, now=0.0)
    assert [s[2] for s in _sent_to_workers(core.take_outputs())] == [0, 1, 2]
    _hello_worker(core, b"honest", 0, now=0.0)
    for now in range(1, 11):  # both beat: neither is silent
        for wid in (b"hoarder", b"honest"):
            core.worker_message(wid, P.decode(P.control(P.HEARTBEAT, wid.decode())), float(now))
        core.tick(float(now))
    assert b"hoarder" in core.workers  # 10 s: not past the lease yet
    core.worker_message(b"honest", P.decode(P.control(P.CREDIT, "honest", n=3)), 10.5)
    assert _sent_to_workers(core.take_outputs()) == []  # nothing queued: the hoarder holds every frame
    core.tick(10.5)
    assert b"hoarder" not in core.workers
    assert _sent_to_workers(core.take_outputs()) == [(b"honest", "a", 0), (b"honest", "a", 1), (b"honest", "a", 2)]
    assert core.sources["a"].resent == 3


def test_without_a_lease_a_beating_worker_keeps_its_frames() -> None:
    core = DispatchCore({"a": False}, heartbeat_s=1.0, liveness=3)
    _hello_source(core, "a")
    core.source_message(b"a", _frame("a", 0), 0.0)
    _hello_worker(core, b"w1", 1, now=0.0)
    for now in range(1, 100, 2):
        core.worker_message(b"w1", P.decode(P.control(P.HEARTBEAT, "w1")), float(now))
        core.tick(float(now))
    assert b"w1" in core.workers and core.sources["a"].resent == 0


def test_result_from_a_worker_that_never_had_the_frame_is_refused() -> None:
    core = DispatchCore({"a": False})
    _hello_source(core, "a")
    core.source_message(b"a", _frame("a", 0), 0.0)
    _hello_worker(core, b"w1", 1)
    _hello_worker(core, b"rogue", 0)
    core.take_outputs()
    frame = P.encode(P.FRAME, "a", [P.raw_part("image", np.zeros((8, 8, 3), np.uint8))], seq=0, frame=0, origin="a",
                     epoch=1, dropped=0)
    core.worker_message(b"rogue", _result(frame), 0.1)
    assert not any(o.to == DOWNSTREAM for o in core.take_outputs())
    assert core.rejected["result-from-wrong-worker"] == 1


def test_frame_given_up_after_max_attempts_is_delivered_as_error() -> None:
    core = DispatchCore({"a": False}, heartbeat_s=0.1, liveness=2, max_attempts=2)
    _hello_source(core, "a")
    core.source_message(b"a", _frame("a", 0), 0.0)
    for i, now in enumerate((0.0, 1.0)):
        _hello_worker(core, f"w{i}".encode(), 1, now=now)
        core.take_outputs()
        core.tick(now + 0.5)
    downs = [P.decode(o.frames) for o in core.take_outputs() if o.to == DOWNSTREAM]
    assert len(downs) == 1 and downs[0].header["error"].startswith("given up")
    assert len(P.detections_from(downs[0])) == 0


def test_live_source_gets_credit_only_when_a_worker_has_room() -> None:
    core = DispatchCore({"cam": True, "cam2": True})
    _hello_source(core, "cam")
    _hello_source(core, "cam2")
    assert _credit(core.take_outputs(), "cam") == 0  # no worker yet: the camera keeps its newest frame
    _hello_worker(core, b"w1", 1)
    outs = core.take_outputs()
    assert _credit(outs, "cam") + _credit(outs, "cam2") == 1  # one slot, one credit
    sid = "cam" if _credit(outs, "cam") else "cam2"
    core.source_message(sid.encode(), _frame(sid, 0), 0.1)
    assert _sent_to_workers(core.take_outputs()) == [(b"w1", sid, 0)]


def test_live_frames_of_a_dead_worker_are_dropped_not_resent() -> None:
    core = DispatchCore({"cam": True}, heartbeat_s=0.1, liveness=2)
    _hello_source(core, "cam")
    _hello_worker(core, b"w1", 1)
    core.take_outputs()
    core.source_message(b"cam", _frame("cam", 0), 0.0)
    core.take_outputs()
    core.tick(1.0)
    assert core.sources["cam"].dropped == 1 and not core.pending


def test_backpressure_pauses_dispatch() -> None:
    core = DispatchCore({"a": False})
    _hello_source(core, "a")
    core.source_message(b"a", _frame("a", 0), 0.0)
    core.downstream_ready = False
    _hello_worker(core, b"w1", 4)
    assert _sent_to_workers(core.take_outputs()) == []
    core.downstream_ready = True
    core.tick(0.0)
    assert _sent_to_workers(core.take_outputs()) == [(b"w1", "a", 0)]


def test_unknown_source_is_rejected() -> None:
    core = DispatchCore({"a": False})
    core.source_message(b"x", P.decode(P.control(P.HELLO, "x", role="source")), 0.0)
    assert core.rejected == {"unknown-source": 1} and not core.take_outputs()
