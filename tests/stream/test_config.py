"""The graph config: the documented example validates, flags win, errors name field and value."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipeline.errors import GhostboxError
from pipeline.stream.config import graph_from_dict, load_graph, resolve, source_id_for, with_overrides

REPO = Path(__file__).resolve().parents[2]


def test_documented_example_validates_and_resolves(tmp_path: Path) -> None:
    graph = load_graph(REPO / "configs/pipeline.yaml")
    assert graph.mode == "lossless" and graph.sources[0].resolved_kind == "synth"
    resolved = resolve(graph, tmp_path)
    assert resolved.endpoints.sources.url == f"ipc://{tmp_path.resolve()}/sources.sock"
    assert resolved.endpoints.filter.binder == "broker" and resolved.sinks[0].endpoint.binder == "sink"
    assert Path(resolved.sinks[0].out).is_absolute()
    workers = [f"worker:{i}" for i in range(resolved.worker_plan().count)]  # auto: chosen for this machine
    assert resolved.stage_names() == ["broker", "filter", "sink:out", *workers, "source:street"]


def test_flags_override_the_file() -> None:
    from pipeline.cli.main import _parser
    from pipeline.cli.run_cmd import graph_from_args

    argv = ["run", "--workers", "3", "--mode", "live", "--model", "m.pt", "--imgsz", "640", "--out", "o", "--filter",
            "f.filter.safetensors", "--metrics-port", "9100"]
    for uri in ["cam.mp4", "cam.mp4", "0", "rtsp://h/s", "synth:seed=1"]:
        argv += ["--source", uri]
    args = _parser().parse_args(argv)
    data = with_overrides({"mode": "lossless", "sources": [{"id": "x", "uri": "a.mp4"}]}, args.graph_flags.given(args),
                          sources=args.source, first_sink={"out": args.out})
    assert graph_from_args(args) == graph_from_dict(data, "command line")
    graph = graph_from_dict(data, "command line")
    assert [s.id for s in graph.sources] == ["cam", "cam_2", "webcam0", "rtsp0", "synth"]
    assert [s.resolved_kind for s in graph.sources] == ["file", "file", "webcam", "stream", "synth"]
    assert graph.workers.count == 3 and graph.mode == "live" and graph.detector.model == "m.pt"
    assert graph.detector.imgsz == 640 and graph.sinks[0].out == "o"
    # broker filter sink 3 workers 5 sources
    assert graph.metrics_port("broker") == 9100 and graph.metrics_port("source:synth") == 9100 + 10


@pytest.mark.parametrize("data, words", [
    ({"sources": []}, ["sources"]),
    ({"sources": [{"id": "a b", "uri": "x"}]}, ["sources.0.id"]),
    ({"sources": [{"id": "a", "uri": "x"}, {"id": "a", "uri": "y"}]}, ["unique", "a"]),
    ({"sources": [{"id": "a", "uri": "x"}], "moed": "live"}, ["moed"]),
    ({"sources": [{"id": "a", "uri": "x"}], "endpoints": {"sources": {"url": "http://x"}}}, ["endpoints.sources.url"]),
    ({"sources": [{"id": "a", "uri": "x"}], "detector": {"imgsz": 7}}, ["detector", "imgsz", "7"]),
    ({"sources": [{"id": "a", "uri": "x"}], "endpoints": {"filter": {"binder": "sink"}}}, ["binder"]),
])
def test_errors_name_the_field(data: dict, words: list[str]) -> None:
    with pytest.raises(GhostboxError) as exc:
        graph_from_dict(data, "config 'g.yaml'")
    text = str(exc.value)
    assert "g.yaml" in text and all(w in text for w in words), text


def test_source_ids() -> None:
    taken: set[str] = set()
    assert [source_id_for(u, taken) for u in ("a/b/clip.mp4", "imgs/", "imgs/*.jpg", "rtsp://x", "rtsp://y", "2")] \
        == ["clip", "imgs", "imgs_2", "rtsp0", "rtsp1", "webcam2"]


def test_same_url_on_two_edges_is_refused(tmp_path: Path) -> None:
    graph = graph_from_dict({"sources": [{"id": "a", "uri": "x"}], "endpoints": {
        "sources": {"url": "tcp://127.0.0.1:5000"}, "workers": {"url": "tcp://127.0.0.1:5000"}}}, "c")
    with pytest.raises(GhostboxError, match="same URL"):
        resolve(graph, tmp_path)


def test_run_needs_a_source(capsys: pytest.CaptureFixture) -> None:
    from pipeline.cli.run_cmd import graph_from_args

    args = argparse.Namespace(config=None, source=None)
    with pytest.raises(GhostboxError, match="--source"):
        graph_from_args(args)



def test_hops_that_leave_the_machine() -> None:
    from pipeline.stream.endpoints import leaves_machine, parse_url

    assert leaves_machine("tcp://10.0.0.5:5550") and leaves_machine("tcp://cam-host:5550")
    assert not leaves_machine("tcp://127.0.0.1:5550") and not leaves_machine("ipc:///tmp/x.sock")
    assert not leaves_machine("tcp://[::1]:5550")
    with pytest.raises(ValueError):
        parse_url("tcp://host")


def test_a_filter_for_other_weights_or_a_lower_conf_is_refused_before_any_stage_starts(tmp_path: Path) -> None:
    from pipeline.bundled import ASSETS, DEFAULT_MODEL_NAME
    from pipeline.stream.supervisor import preflight

    bundled_filter = str(ASSETS / "filters" / f"{DEFAULT_MODEL_NAME}.filter.safetensors")
    other = tmp_path / "other.pt"
    other.write_bytes(b"not the weights the filter was fitted for")
    base = {"sources": [{"id": "s", "uri": "synth:seed=0,frames=2"}], "filter": {"path": bundled_filter},
            "sinks": [{"name": "out", "out": str(tmp_path / "out")}]}
    with pytest.raises(GhostboxError, match="fitted for another detector.*weights_sha256"):
        preflight(resolve(graph_from_dict({**base, "detector": {"model": str(other)}}, "test"), tmp_path / "run"))
    with pytest.raises(GhostboxError, match="conf >= 0.25, but the detector runs at conf 0.1"):
        preflight(resolve(graph_from_dict({**base, "detector": {"conf": 0.1}}, "test"), tmp_path / "run"))
    preflight(resolve(graph_from_dict(base, "test"), tmp_path / "run"))  # the bundled pair starts


def _summary_after(tmp_path: Path, summary: dict | None, killed: bool, rows: list[dict] | None = None) -> dict:
    """What the supervisor makes of a sink's summary.json (and rows) after the run, without running one."""
    import json
    import subprocess

    from pipeline.stream.stage_processes import Child
    from pipeline.stream.supervisor import Supervisor

    out = tmp_path / "out"
    out.mkdir()
    if summary is not None:
        (out / "summary.json").write_text(json.dumps(summary))
    if rows is not None:
        (out / "detections.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn')
    graph = resolve(graph_from_dict({"sources": [{"id": "cam", "uri": "synth:seed=0,frames=9"}],
                                     "sinks": [{"name": "out", "out": str(out)}]}, "test"), tmp_path / "run")
    supervisor = Supervisor(graph)
    proc = subprocess.Popen(["true"])
    proc.wait()
    supervisor.stages.children["sink:out"] = Child("sink:out", proc, exit_code=-9)
    if killed:
        supervisor.stages.killed["sink:out"] = {"why": "test", "held": 0}
    [annotated] = supervisor.annotate_summaries()
    assert json.loads((out / "summary.json").read_text()) == annotated
    return annotated


def test_a_killed_sinks_summary_counts_the_rows_it_wrote(tmp_path: Path) -> None:
    rows = [{"source": "synth:seed=0,frames=9", "frame": i, "boxes": []} for i in range(7)]
    summary = _summary_after(tmp_path, None, killed=True, rows=rows)
    assert summary["status"] == "incomplete" and summary["frames"] == 7
    assert summary["per_source"]["cam"]["frames"] == 7
    assert any("7 rows in detections.jsonl" in p for p in summary["problems"])


def test_a_sink_stopped_without_a_signal_is_incomplete_not_interrupted(tmp_path: Path) -> None:
    summary = _summary_after(tmp_path, {"status": "interrupted", "frames": 285, "problems": []}, killed=False)
    assert summary["status"] == "incomplete"
    assert any("no Ctrl-C or SIGTERM" in p for p in summary["problems"])
