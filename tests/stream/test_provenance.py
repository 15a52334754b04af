"""Seals: what a source, the filter and a sink compute and check (pipeline/stream/provenance.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.stream import protocol as P
from pipeline.stream.provenance import SEAL_FILE, Seal, load_seal_key, make_seal_key, part_specs, peer_name

FRAME = {"seq": 7, "frame": 7, "origin": "clip.mp4", "epoch": 123}


def _seal() -> Seal:
    return Seal(bytes(range(32)))


def _result(seal: Seal, boxes: float = 5.0, with_image: bool = True) -> P.Message:
    """A scored result as the filter sends it, sealed, decoded as the sink receives it."""
    dets = Detections(xyxy=[[1.0, 1, boxes, boxes]], confidence=[0.9], class_id=[0], logits=np.zeros((1, 2)),
                      box_features=np.zeros((1, 8)), level=[0], class_names=("a", "b"), image_size=(16, 16),
                      data={"score": np.array([0.3], np.float32)})
    fields, parts = P.detections_parts(dets, "none")
    if with_image:
        parts.append(P.raw_part("image", np.zeros((16, 16, 3), np.uint8)))
    header = {**fields, **FRAME, "seal": seal.frame("cam", FRAME), "policy": "flag"}
    specs = [spec for spec, _ in parts]
    header["sealed"] = seal.result("cam", header, specs, [payload for _, payload in parts])
    return P.decode(P.encode(P.DETECTIONS, "cam", parts, **header))


def test_a_frame_seal_binds_the_stream_epoch_seq_frame_and_origin() -> None:
    seal = _seal()
    base = seal.frame("cam", FRAME)
    assert seal.frame("cam", dict(FRAME)) == base and len(base) == 16
    for key, value in (("seq", 8), ("epoch", 124), ("frame", 8), ("origin", "other.mp4")):
        assert seal.frame("cam", {**FRAME, key: value}) != base, key
    assert seal.frame("cam2", FRAME) != base
    assert Seal(bytes(32)).frame("cam", FRAME) != base  # another key


def test_an_end_of_stream_seal_binds_its_count_except_a_failed_stream() -> None:
    seal = _seal()
    ok = {"status": "ok", "total": 100, "epoch": 5}
    assert seal.eos("cam", {**ok, "total": 160}) != seal.eos("cam", ok)
    assert seal.eos("cam", {**ok, "status": "interrupted"}) != seal.eos("cam", ok)
    # the supervisor seals a dead source's end without its epoch or count; the broker fills them in
    failed = seal.eos("cam", {"status": "failed", "total": None})
    assert seal.eos("cam", {"status": "failed", "total": 40, "epoch": 9}) == failed


def test_the_sink_recomputes_the_filters_seal_from_what_it_received() -> None:
    seal = _seal()
    message = _result(seal)
    expected = seal.result("cam", message.header, part_specs(message), message.parts)
    assert Seal.same(expected, message.header["sealed"])


@pytest.mark.parametrize("change", ["box", "score", "header", "frame-seal", "no-seal"])
def test_a_result_altered_after_the_filter_fails_its_seal(change: str) -> None:
    seal = _seal()
    message = _result(seal)
    header, parts = dict(message.header), [bytes(memoryview(p)) for p in message.parts]
    names = [spec.name for spec in message.specs]
    if change == "box":
        xyxy = np.frombuffer(parts[names.index("xyxy")], np.float32).copy()
        xyxy[2] += 1
        parts[names.index("xyxy")] = xyxy.tobytes()
    elif change == "score":
        parts[names.index("data.score")] = np.array([0.9], np.float32).tobytes()
    elif change == "header":
        header["policy"] = "drop"
    elif change == "frame-seal":
        header["seal"] = seal.frame("cam", {**FRAME, "seq": 8})
    else:
        del header["sealed"]
    expected = seal.result("cam", header, part_specs(message), parts)
    assert not Seal.same(expected, header.get("sealed"))


def test_pixels_are_not_sealed() -> None:
    """The image and crops are left out (hashing them costs about a millisecond a frame): documented."""
    seal = _seal()
    message = _result(seal)
    parts = [bytes(memoryview(p)) for p in message.parts]
    parts[[s.name for s in message.specs].index("image")] = b"\xff" * (16 * 16 * 3)
    assert Seal.same(seal.result("cam", message.header, part_specs(message), parts), message.header["sealed"])


def test_seal_key_files(tmp_path: Path) -> None:
    path = make_seal_key(tmp_path / "k" / SEAL_FILE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(load_seal_key(path)) == 32
    first = path.read_text()
    assert make_seal_key(path, exist_ok=True) == path and path.read_text() == first  # kept
    with pytest.raises(GhostboxError, match="already exists"):
        make_seal_key(path)
    assert [p.name for p in path.parent.iterdir()] == [SEAL_FILE]  # nothing left aside
    os.chmod(path, 0o644)
    os.chmod(path.parent, 0o755)
    with pytest.raises(GhostboxError, match="chmod 600"):
        load_seal_key(path)
    bad = tmp_path / "bad.key"
    bad.write_text("not hex\n")
    bad.chmod(0o600)
    with pytest.raises(GhostboxError, match="not hex"):
        load_seal_key(bad)
    with pytest.raises(GhostboxError, match="not found.*ghostbox keys"):
        load_seal_key(tmp_path / "missing.key")


def test_keys_writes_one_seal_key_per_folder_and_keeps_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "keys"
    assert main(["keys", "--out", str(out), "server", "client"]) == 0
    assert "seal.key" in capsys.readouterr().out
    first = (out / SEAL_FILE).read_text()
    assert main(["keys", "--out", str(out), "extra"]) == 0  # a pair added: the folder's seal key stays
    assert (out / SEAL_FILE).read_text() == first
    assert main(["keys", "--out", str(out), "--seal"]) == 2
    assert "seal.key' already exists" in capsys.readouterr().err
    assert main(["keys", "--out", str(out), "--seal", "--force"]) == 0
    assert (out / SEAL_FILE).read_text() != first


def test_peer_names() -> None:
    class Frame:
        def __init__(self, props: dict) -> None:
            self.props = props

        def get(self, name: str) -> str:
            if name not in self.props:
                raise OSError("no such property")
            return self.props[name]

    assert peer_name(Frame({"Peer-Address": "localhost:0:0:4242"})) == "ipc peer pid 4242 (uid 0)"
    assert peer_name(Frame({"Peer-Address": "10.0.0.6", "User-Id": "ghostbox"})) == "10.0.0.6 (graph token)"
    assert peer_name(Frame({"Peer-Address": "10.0.0.6", "User-Id": "fIX=xUL{?D=/44tx>Xk]l=c"})) == \
        "10.0.0.6 (CURVE key fIX=xUL{?D=/...)"
    assert peer_name(b"raw bytes") == "unknown peer"
