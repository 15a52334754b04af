"""`ghostbox bench detector|filter|stream|street|tracks|streets|crop|gpu|cpu`: figures measured side by side, as tables.

`--out PATH.md` writes the figures as a markdown table headed by the date (UTC), the machine,
the ghostbox commit and the exact command (`pipeline/bench/report.py`); `--out PATH.json` as
JSON; any other `--out` is a folder that gets both. docs/benchmarks/ is written this way.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.bench import street_streams
from pipeline.bench.report import write_result
from pipeline.bundled import ASSETS, DEFAULT_MODEL_NAME, default_model
from pipeline.cli import eval_cmd
from pipeline.cli.settings_args import SettingsHelpFormatter, add_setting, field_default
from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import FILTER_SUFFIX
from pipeline.sources.media_files import MediaReport
from pipeline.synth.config import WorldConfig

OUT_HELP = ("write the figures: PATH.md a markdown table headed by date, machine, commit and command; "
            "PATH.json JSON; anything else a folder for both")


# Each flag's default lives in the benchmark function it is passed to, read only when help is printed
# (the functions' modules import torch): see cli/settings_args.py.
DETECTOR = "pipeline.bench.detector_speed:bench_detector"
FRAMES = "pipeline.bench.detector_speed:sample_frames"
FILTER = "pipeline.bench.scorer_speed:bench_scorers"
FRAME_TIME = "pipeline.bench.scorer_speed:detector_frame_ms"
STREAM = "pipeline.bench.stream_speed:bench_stream"
TRACKS = "pipeline.bench.track_verdicts:bench_tracks"
CROP = "pipeline.bench.crop_cost:bench_crop"
GPU = "pipeline.bench.gpu_check:bench_gpu"
CPU = "pipeline.bench.cpu_fast_path:bench_cpu"


def _sub(which: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    return which.add_parser(name, formatter_class=SettingsHelpFormatter, **kwargs)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmarks (speed against a baseline in one run)",
                            description="Each benchmark prints its figures; --out writes them as a markdown table "
                                        "(stamped with date, machine, commit and command) or JSON.")
    which = parser.add_subparsers(dest="bench", metavar="WHAT", required=True)
    det = _sub(which, "detector", help="frames/s of ghostbox's detector vs Ultralytics predict, both backends")
    det.add_argument("--model", "-m", help=".pt model (default: the bundled street-world model)")
    det.add_argument("--source", help="image, folder or video to take frames from (default: bundled samples)")
    add_setting(det, "--frames", model=FRAMES, field="count", type=int, help="frames per round")
    add_setting(det, "--size", model=FRAMES, field="size", help="frame size WxH when frames are resized")
    add_setting(det, "--imgsz", model=DETECTOR, field="imgsz", type=int, help="inference size")
    add_setting(det, "--conf", model=DETECTOR, field="conf", type=float, help="confidence threshold")
    add_setting(det, "--rounds", model=DETECTOR, field="rounds", type=int, help="timed rounds (the median is shown)")
    add_setting(det, "--backends", model=DETECTOR, field="backends", help="comma-separated: pt, onnx")
    det.add_argument("--out", help=OUT_HELP)
    det.set_defaults(handler=run_detector, bench_parser=det)
    flt = _sub(which, "filter", help="OOD scoring cost per 50 boxes against the detector's time per frame")
    flt.add_argument("--model", "-m", help=".pt model whose frame time is the yardstick (default: bundled)")
    add_setting(flt, "--imgsz", model=FRAME_TIME, field="imgsz", type=int, help="the yardstick's inference size")
    flt.add_argument("--feature-dim", type=int, help="feature size (default: the model's)")
    add_setting(flt, "--boxes", model=FILTER, field="batch", type=int, help="boxes scored per call")
    add_setting(flt, "--fit-boxes", model=FILTER, field="fit_boxes", type=int, help="ID boxes each score is "
                "fitted on")
    add_setting(flt, "--knn-bank", model=FILTER, field="knn_bank", type=int, help="knn bank size for the search "
                "timing (0: skip)")
    add_setting(flt, "--abet-boxes", model=FILTER, field="abet_boxes", type=int, help="boxes of the abet training "
                "timing (0: skip)")
    flt.add_argument("--methods", help="comma-separated scores (default: every registered one)")
    add_setting(flt, "--repeats", model=FILTER, field="repeats", type=int, help="timed calls per score")
    flt.add_argument("--out", help=OUT_HELP)
    flt.set_defaults(handler=run_filter, bench_parser=flt)
    stream = _sub(which, "stream",
                  help="`ghostbox run` vs Ultralytics predict(stream=True), transport per hop, live latency, memory")
    stream.add_argument("--model", "-m", help=".pt model (default: the bundled street-world model)")
    stream.add_argument("--source", help="video to run on (default: the synthetic world's stream, written once)")
    add_setting(stream, "--video-frames", model=STREAM, field="video_frames", type=int,
                help="frames of the generated video")
    add_setting(stream, "--imgsz", model=STREAM, field="imgsz", type=int, help="inference size")
    add_setting(stream, "--conf", model=STREAM, field="conf", type=float, help="confidence threshold")
    add_setting(stream, "--batch", model=STREAM, field="batch", type=int,
                help="ghostbox worker batch (frames per forward pass)")
    add_setting(stream, "--workers", model=STREAM, field="workers", type=int,
                help="detector workers of the ghostbox runs (default: auto, chosen for this machine)")
    add_setting(stream, "--rounds", model=STREAM, field="rounds", type=int,
                help="throughput rounds, alternating the two runners")
    add_setting(stream, "--duration", model=STREAM, field="duration_s", type=float,
                help="live run of this many seconds with a 30 fps source (300 for the acceptance figure; 0: none)")
    add_setting(stream, "--frames", model=STREAM, field="memory_frames", type=int,
                help="memory run of this many frames, lossless (10000 for the acceptance figure; 0: none)")
    stream.add_argument("--out", help=OUT_HELP)
    stream.set_defaults(handler=run_stream, bench_parser=stream)
    street = _sub(
        which, "street", help="the street world as a benchmark: `ghostbox eval` of the bundled model and filter",
        description="Writes the world of --seed into --world unless it is there already, runs `ghostbox eval` on "
                    "id/val against ood/near_test, ood/far_test and ood/contaminated with the bundled model and "
                    "filter, and writes its report.md under the header line.")
    add_setting(street, "--seed", model=WorldConfig, field="seed", help="the world's seed")
    street.add_argument("--world", help="world folder (default .ghostbox/worlds/seed<SEED>)")
    street.add_argument("--model", "-m", help="detector (default: the bundled street-world model)")
    street.add_argument("--filter", dest="filter_path", help="filter file (default: the bundled filter)")
    street.add_argument("--eval-out", help="folder of the full evaluation (report.json, plots; default: a "
                                           "temporary folder)")
    street.add_argument("--out", help=OUT_HELP)
    street.set_defaults(handler=run_street, bench_parser=street)
    tracks = _sub(
        which, "tracks", help="per-track against per-frame verdicts on the street world's stream, and tracking's cost",
        description="Renders synth:seed=SEED,frames=N for each N of --frames, detects with the bundled model at the "
                    "demo's settings, filters with the bundled filter, tracks (ByteTrack) and judges each box by its "
                    "frame's and its track's verdict (TrackVerdicts, each --hysteresis) against the ground truth; then "
                    "times tracking + track verdicts on --objects synthetic moving boxes against the detector.")
    add_setting(tracks, "--frames", model=TRACKS, field="frames", help="comma-separated frame counts, one run each")
    add_setting(tracks, "--seed", model=TRACKS, field="seed", type=int, help="the world's seed")
    add_setting(tracks, "--hysteresis", model=TRACKS, field="hysteresis",
                help="comma-separated TrackVerdicts hysteresis values")
    add_setting(tracks, "--objects", model=TRACKS, field="objects", type=int,
                help="moving boxes of the synthetic cost sequence")
    add_setting(tracks, "--cost-frames", model=TRACKS, field="cost_frames", type=int,
                help="frames of the synthetic cost sequence")
    tracks.add_argument("--out", help=OUT_HELP)
    tracks.set_defaults(handler=run_tracks, bench_parser=tracks)
    streets = _sub(
        which, "streets", help="does the filter hold on streets nobody tuned it on? every adaptation recipe per street",
        description="For each world seed: a stream of --frames frames (rendered, detected and judged once, cached in "
                    "--cache); each recipe adapts the bundled filter on the first --calibration-frames frames without "
                    "their ground truth and is judged on the rest with it. Development and held-out seeds are "
                    "reported apart (pipeline/bench/streets.py).")
    streets.add_argument("--development", default=street_streams.DEVELOPMENT_SEEDS,
                         help="development seeds: rules are chosen on these")
    streets.add_argument("--held-out", default=street_streams.HELD_OUT_SEEDS, help="held-out seeds: only reported")
    streets.add_argument("--frames", type=int, default=street_streams.FRAMES, help="frames per street")
    streets.add_argument("--calibration-frames", type=int, default=street_streams.CALIBRATION_FRAMES,
                         help="frames the recipes adapt on")
    streets.add_argument("--world", default=".ghostbox/worlds/seed0",
                         help="the bundled filter's world (its id/train and ood/pool re-fit the score; written "
                              "unless there)")
    streets.add_argument("--no-refit", action="store_true", help="leave out the re-fit recipe (no world needed)")
    streets.add_argument("--filter", dest="filter_path", help="the filter every recipe starts from (default: the "
                         "bundled one); one with a crop model gets the crops re-cut from re-rendered frames")
    streets.add_argument("--cache", default=".ghostbox/streets", help="folder of the detected streams")
    streets.add_argument("--out", help=OUT_HELP)
    streets.set_defaults(handler=run_streets, bench_parser=streets)
    crop = _sub(
        which, "crop", help="a crop model's cost: ms per box, and the demo pipeline's frames/s with it against without",
        description="Times the filter's scorer (and each fusion member) on the demo stream's boxes in batches of 1, "
                    "16 and 64 with --threads torch threads, then runs the demo graph with --filter and with "
                    "--baseline, alternating --rounds times (pipeline/bench/crop_cost.py).")
    crop.add_argument("--filter", dest="filter_path", required=True, help="the filter with a crop model")
    crop.add_argument("--baseline", help="the filter to compare with (default: the bundled one)")
    add_setting(crop, "--frames", model=CROP, field="frames", type=int, help="frames of the demo stream per run")
    add_setting(crop, "--workers", model=CROP, field="workers", type=int, help="detector workers")
    add_setting(crop, "--rounds", model=CROP, field="rounds", type=int, help="runs of each filter, alternating")
    add_setting(crop, "--threads", model=CROP, field="threads", type=int,
                help="torch threads for the per-box timing")
    crop.add_argument("--out", help=OUT_HELP)
    crop.set_defaults(handler=run_crop, bench_parser=crop)
    gpu = _sub(
        which, "gpu", help="the CUDA backends: features against the CPU's, `ghostbox run` frames/s, GPU memory",
        description="On a machine with CUDA: the same frames through the CPU PyTorch backend and through PyTorch "
                    "CUDA fp32/fp16 and ONNX Runtime CUDA, logits, features and boxes against the CPU's within "
                    "stated tolerances; then lossless `ghostbox run` on --streams copies of a 640-px video, "
                    "frames/s and GPU memory (nvidia-smi) per backend (pipeline/bench/gpu_check.py). Without "
                    "CUDA it says so and exits 0.")
    gpu.add_argument("--model", "-m", help=".pt model (default: the bundled street-world model)")
    add_setting(gpu, "--imgsz", model=GPU, field="imgsz", type=int, help="inference size and frame size")
    add_setting(gpu, "--parity-frames", model=GPU, field="parity_frames", type=int,
                help="frames compared against the CPU")
    add_setting(gpu, "--frames", model=GPU, field="frames", type=int,
                help="frames per throughput run, split over its streams")
    add_setting(gpu, "--streams", model=GPU, field="streams", help="comma-separated stream counts, one run each")
    add_setting(gpu, "--batch", model=GPU, field="batch", type=int, help="frames per forward pass")
    add_setting(gpu, "--workers", model=GPU, field="workers", type=int, help="detector workers of each run")
    gpu.add_argument("--out", help=OUT_HELP)
    gpu.set_defaults(handler=run_gpu, bench_parser=gpu)
    cpu = _sub(
        which, "cpu", help="the CPU fast path: `ghostbox run` with the .pt, fp32 and int8 ONNX (with and without a "
        "filter) against Ultralytics, whole processes",
        description="Exports MODEL to fp32 and int8 ONNX (int8 calibrated on --calibration), fits a knn filter for "
                    "each, then times whole processes in rounds: Ultralytics' predict(stream=True) on the .pt and "
                    "`ghostbox run` with the .pt, fp32, fp32 + filter, int8 and int8 + filter; then the start-up "
                    "pair on a short clip (pipeline/bench/cpu_fast_path.py). Exits 1 when a run failed.")
    cpu.add_argument("--model", "-m", help=".pt model (default: the bundled street-world model)")
    cpu.add_argument("--video", help="video to time on (default: the street world's stream, rendered at --imgsz)")
    add_setting(cpu, "--frames", model=CPU, field="frames", type=int, help="frames of the timed video")
    add_setting(cpu, "--imgsz", model=CPU, field="imgsz", type=int, help="inference size (and rendered frame size)")
    cpu.add_argument("--calibration", help="frames the int8 model and the filters are calibrated on: a video or "
                     "image folder (default: world seed 1's stream)")
    add_setting(cpu, "--calibration-frames", model=CPU, field="calibration_frames", type=int,
                help="frames the int8 quantization reads (default: ghostbox export's)")
    add_setting(cpu, "--conf", model=CPU, field="conf", type=float, help="confidence threshold of every run")
    add_setting(cpu, "--rounds", model=CPU, field="rounds", type=int, help="rounds of every row in turn")
    add_setting(cpu, "--startup-frames", model=CPU, field="startup_frames", type=int,
                help="frames of the start-up clip")
    add_setting(cpu, "--startup-rounds", model=CPU, field="startup_rounds", type=int,
                help="rounds of the start-up pair")
    cpu.add_argument("--workdir", help="folder of the clips, models, filters and logs (reused when there; default: "
                     "a new temporary folder)")
    cpu.add_argument("--out", help=OUT_HELP)
    cpu.set_defaults(handler=run_cpu, bench_parser=cpu)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, by parameter name (the functions' defaults fill the rest)."""
    return {action.lazy_default[1]: getattr(args, action.dest) for action in args.bench_parser._actions
            if getattr(action, "lazy_default", None) and getattr(args, action.dest, None) is not None}


def _setting(args: argparse.Namespace, dest: str) -> Any:
    """A flag's value, or its function's default when it was not given."""
    value = getattr(args, dest)
    if value is not None:
        return value
    action = next(a for a in args.bench_parser._actions if a.dest == dest)
    return field_default(*action.lazy_default)[0]


def command_line(args: argparse.Namespace) -> str:
    """The command that gives `args`: `ghostbox bench WHAT` and every option that is not its default."""
    parser: argparse.ArgumentParser = args.bench_parser
    words = ["ghostbox", "bench", args.bench]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            words.append(flag)
        else:
            words += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return shlex.join(words)


def _written(paths: list[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


def _listed(value: str | tuple[Any, ...], cast: Callable[[str], Any] = str) -> tuple[Any, ...]:
    """A comma-separated flag, or its function's default (already a tuple)."""
    return tuple(cast(v.strip()) for v in value.split(",") if v.strip()) if isinstance(value, str) else tuple(value)


def run_detector(args: argparse.Namespace) -> int:
    # loaded here, not at the top: it pulls Ultralytics and torch, which no other command needs at start
    from pipeline.bench.detector_speed import bench_detector, sample_frames

    backends = _listed(_setting(args, "backends"))
    unknown = [b for b in backends if b not in ("pt", "onnx")]
    if unknown or not backends:  # an unknown name timed nothing: an empty table that exited 0
        raise GhostboxError(f"--backends: unknown {', '.join(unknown) or repr(args.backends)}; "
                            "choose from pt, onnx (comma-separated)")
    model = args.model or str(default_model())
    report = MediaReport()
    frames = sample_frames(args.source, report=report, **{k: v for k, v in _given(args).items()
                                                           if k in ("count", "size")})
    settings = {k: v for k, v in _given(args).items() if k in ("imgsz", "conf", "rounds")}
    result = bench_detector(model, frames, backends=backends, **settings)
    result.update(inputs_complete=report.complete, input_problems=report.problems())
    print(f"model {result['model']}  imgsz {result['imgsz']}  {result['frames']} frames "
          f"{result['frame_size'][0]}x{result['frame_size'][1]}  median of {result['rounds']} rounds")
    print(f"{'runner':<18}{'frames/s':>10}{'ms/frame':>10}{'boxes':>8}")
    for name, fps in result["fps"].items():
        print(f"{name:<18}{fps:>10.2f}{result['ms_per_frame'][name]:>10.2f}{result['boxes'][name]:>8}")
    for backend, ratio in result["ghostbox_over_ultralytics"].items():
        print(f"ghostbox/ultralytics ({backend}): {ratio:.3f}x  "
              f"feature overhead {result['feature_overhead_pct'][backend]:+.1f}%")
    _written(write_result(args.out, "detector", result, command_line(args)))
    for line in report.problems():  # frames of a cut video are repeated to fill the rounds: say so, exit 1
        print(f"ghostbox bench: {line}", file=sys.stderr)
    return 0 if report.complete else 1


def run_stream(args: argparse.Namespace) -> int:
    # loaded here: the stream benchmark pulls the supervisor, ZeroMQ and (for its baseline) Ultralytics
    from pipeline.bench.stream_speed import bench_stream

    model = args.model or str(default_model())
    result = bench_stream(model, Path(args.source) if args.source else None, **_given(args))
    tp = result["throughput"]
    print(f"model {result['model']}  imgsz {result['imgsz']}  video {result['frames']} frames")
    plan = result["workers"]
    print(f"workers: {plan['count']} with {plan['threads']} torch thread(s) and batch "
          f"{plan['batch']} each ({plan['why']})")
    print(f"throughput: ghostbox run (lossless) {tp['ghostbox_fps']:.1f} frames/s, Ultralytics "
          f"predict(stream=True) {tp['ultralytics_fps']:.1f} frames/s: {tp['ghostbox_over_ultralytics']:.2f}x "
          f"(with process start-up {tp['ghostbox_wall_fps_with_startup']:.1f} frames/s)")
    print("transport, one hop (round trip / 2, encode + validate):")
    for name, figures in result["transport"].items():
        print(f"  {name:<18} p50 {figures['p50_ms']:.3f} ms  p99 {figures['p99_ms']:.3f} ms  "
              f"({figures['bytes']} bytes)")
    print("inside the pipeline (p50 ms): "
          + ", ".join(f"{k} {v['p50']:.1f}" for k, v in tp["pipeline_stages_ms"].items()))
    if "live" in result:
        live = result["live"]
        print(f"live {live['duration_s']:.0f} s at 30 fps: {live['frames_processed']} frames processed "
              f"({live['processed_fps']:.1f}/s), {live['dropped']} dropped; latency p99 first third "
              f"{live.get('p99_first_third_ms', 0):.0f} ms, last third {live.get('p99_last_third_ms', 0):.0f} ms, "
              f"trend {live.get('p99_slope_ms_per_min', 0):+.1f} ms/min; without the detector's own time: "
              f"{live.get('non_detect_p99_first_third_ms', 0):.0f} -> "
              f"{live.get('non_detect_p99_last_third_ms', 0):.0f} ms, "
              f"trend {live.get('non_detect_p99_slope_ms_per_min', 0):+.1f} ms/min")
    if "memory" in result:
        mem = result["memory"]
        total = mem.get("total", {})
        print(f"memory over {mem['frames']} frames: all stages {total.get('early_mb', 0):.0f} MB -> "
              f"{total.get('late_mb', 0):.0f} MB ({total.get('growth_pct', 0):+.1f}%)")
        for name, row in mem.get("per_stage", {}).items():
            print(f"  {name:<14} {row['early_mb']:.0f} -> {row['late_mb']:.0f} MB ({row['growth_pct']:+.1f}%)")
    _written(write_result(args.out, "stream", result, command_line(args)))
    return 0


def run_filter(args: argparse.Namespace) -> int:
    """Time the detector on frames, then each scorer on a frame's worth of boxes, in one run."""
    # loaded here: the detector pulls torch, the scores faiss and scipy
    from pipeline.bench.scorer_speed import bench_scorers, detector_frame_ms

    model = args.model or str(default_model())
    imgsz = _setting(args, "imgsz")
    detector, frame_ms = detector_frame_ms(model, imgsz)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    boxes = _setting(args, "batch")
    result = bench_scorers(feature_dim=args.feature_dim or detector.feature_dim, num_classes=len(detector.class_names),
                           methods=methods, **{k: v for k, v in _given(args).items() if k != "imgsz"})
    result.update({"model": model, "imgsz": imgsz, "detector_ms_per_frame": round(frame_ms, 2),
                   "fraction_of_frame": {k: round(v / frame_ms, 4) for k, v in result["ms_per_batch"].items()}})
    print(f"detector {model}: {frame_ms:.1f} ms/frame (imgsz {imgsz}, 1280x720, CPU)")
    print(f"{'score':<14}{'ms/' + str(boxes) + ' boxes':>14}{'of a frame':>12}{'fit s':>8}")
    for name, ms in result["ms_per_batch"].items():
        print(f"{name:<14}{ms:>14.3f}{100 * ms / frame_ms:>11.2f}%{result['fit_s'][name]:>8.2f}")
    knn = result.get("knn_bank") or {}
    if knn:
        shown = ", ".join(f"{k[:-3]} {v:.2f} ms" for k, v in knn.items() if k.endswith("_ms"))
        print(f"knn over a {knn['bank']:,}-feature bank, {boxes} boxes: {shown} "
              f"(index {knn.get('faiss_auto_index')}, nprobe {knn.get('ivf_nprobe')})")
    if "abet_train_s" in result:
        abet = result["abet_train_s"]
        print(f"abet training: {abet['seconds']:.2f} s for {abet['boxes']:,} boxes, {abet['epochs']} epochs")
    _written(write_result(args.out, "filter", result, command_line(args)))
    return 0


def _world(folder: Path, seed: int) -> float | None:
    """The default world of `seed` in `folder`, written unless it is there: seconds it took, None if reused."""
    # loaded here: drawing the world pulls the renderer, which only this benchmark needs
    from pipeline.synth import WorldConfig, generate_world
    from pipeline.synth.world import WORLD_VERSION

    config = WorldConfig(seed=seed)
    manifest = folder / "world.json"
    if manifest.exists():
        world = json.loads(manifest.read_text())
        if world.get("version") == WORLD_VERSION and world.get("config") == config.model_dump(mode="json"):
            return None
        raise GhostboxError(f"--world: '{folder}' holds another world (version {world.get('version')}, or "
                            f"other settings than the default world of seed {seed}); give an empty folder")
    start = time.perf_counter()
    generate_world(config, folder)
    return time.perf_counter() - start


def run_street(args: argparse.Namespace) -> int:
    """The street-world evaluation of the bundled model and filter, as `ghostbox eval` writes it."""
    seed = _setting(args, "seed")
    world = Path(args.world or f".ghostbox/worlds/seed{seed}")
    synth_s = _world(world, seed)
    model = args.model or str(default_model())
    filter_path = args.filter_path or str(ASSETS / "filters" / f"{DEFAULT_MODEL_NAME}{FILTER_SUFFIX}")
    eval_out = Path(args.eval_out or tempfile.mkdtemp(prefix="ghostbox-bench-street-"))
    argv = ["eval", "--model", model, "--id", str(world / "id" / "val"),
            *(w for name in ("near_test", "far_test", "contaminated") for w in ("--ood", str(world / "ood" / name))),
            "--filter", filter_path, "--out", str(eval_out)]
    if not args.eval_out:
        argv.append("--no-plots")
    parser = argparse.ArgumentParser(prog="ghostbox")
    eval_cmd.add_parser(parser.add_subparsers(dest="command"))
    eval_args = parser.parse_args(argv)
    start = time.perf_counter()
    eval_args.handler(eval_args)
    eval_s = time.perf_counter() - start
    shown = ["ghostbox", *(str(Path(a).relative_to(Path.cwd())) if Path(a).is_absolute() and
                           Path(a).is_relative_to(Path.cwd()) else a for a in argv)]
    result = {"seed": seed, "world": str(world), "synth_s": synth_s, "eval_s": round(eval_s, 1),
              "eval_command": shlex.join(shown), "report_md": (eval_out / "report.md").read_text(),
              "report": json.loads((eval_out / "report.json").read_text())}
    _written(write_result(args.out, "street", result, command_line(args)))
    return 0


def run_tracks(args: argparse.Namespace) -> int:
    """Frame against track verdicts on the world's stream, then tracking's cost per frame."""
    # loaded here: the benchmark pulls the detector (torch, Ultralytics) and the tracker
    from pipeline.bench.track_verdicts import bench_tracks, write_page

    given = _given(args)
    try:
        frames = _listed(_setting(args, "frames"), int)
        hysteresis = _listed(_setting(args, "hysteresis"), float)
    except ValueError as exc:
        raise GhostboxError(f"--frames, --hysteresis: expected comma-separated numbers, got '{args.frames}', "
                            f"'{args.hysteresis}'") from exc
    result = bench_tracks(**{**given, "frames": frames, "hysteresis": hysteresis})
    for run in result["runs"]:
        print(f"{run['uri']}: {run['boxes']} boxes, {run['hallucinations']} on OoD objects, {run['id_detections']} "
              f"ID, {run['tracks']} tracks")
        for key, row in run["rows"].items():
            caught = 100 * row["caught"] / run["hallucinations"] if run["hallucinations"] else float("nan")
            wrong = 100 * row["wrongly_flagged"] / run["id_detections"] if run["id_detections"] else float("nan")
            flips = row["flips_per_track"]
            print(f"  {key:<12} caught {caught:5.1f}%  wrongly flagged {wrong:5.1f}%  flips/track "
                  f"{'n/a' if flips is None else f'{flips:.2f}'}")
        auc = run["auroc"]
        print("  AUROC box margin {}, track running mean {}, whole-track mean {}".format(
            *(("n/a" if v is None else f"{v:.3f}") for v in (auc["box_margin"], auc["track_running_mean"],
                                                           auc["track_whole_mean"]))))
        ms = run["ms_per_frame"]
        print(f"  ms/frame: detect {ms['detect']:.1f}, filter {ms['filter']:.2f}, track {ms['track']:.3f}, "
              f"verdicts {ms['verdicts']:.3f}")
    cost = result["cost"]
    ratio = cost["track_over_detect"]
    print(f"cost, {cost['objects']} objects x {cost['frames']} frames: tracking + verdicts "
          f"{cost['ms_per_frame']['track_and_verdicts']:.3f} ms/frame (track {cost['ms_per_frame']['track']:.3f}, "
          f"verdicts {cost['ms_per_frame']['verdicts']:.3f}) = "
          f"{'n/a' if ratio is None else f'{100 * ratio:.2f}%'} of the detector's {cost['detect_ms_per_frame']:.1f} ms")
    _written(write_page(args.out, result, command_line(args)))
    return 0


def run_crop(args: argparse.Namespace) -> int:
    """A crop model's cost per box and in the demo pipeline, against a baseline filter."""
    from pipeline.bench.crop_cost import bench_crop, write_page

    baseline = args.baseline or str(ASSETS / "filters" / f"{DEFAULT_MODEL_NAME}{FILTER_SUFFIX}")
    given = _given(args)
    if given and min(given.values()) < 1:
        raise GhostboxError("--frames, --workers, --rounds and --threads must be >= 1")
    result = bench_crop(args.filter_path, baseline, **given)
    for name, by_batch in result["per_box"]["rows"].items():
        print(f"{name:<10} " + "  ".join(f"{b} boxes {v['ms_per_batch']:.2f} ms ({v['ms_per_box']:.3f}/box)"
                                         for b, v in by_batch.items()))
    for name, m in result["pipeline"]["median"].items():
        print(f"pipeline with {name:<9} {m['fps']:.1f} frames/s, {m['wall_s']:.1f} s wall (median)")
    codes = [r["code"] for runs in result["pipeline"]["runs"].values() for r in runs]
    ratio = result["fps_ratio"]
    print(f"frames/s with the crop filter: {'n/a' if ratio is None else f'{100 * ratio:.0f}%'} of the baseline's")
    _written(write_page(args.out, result, command_line(args)))
    return 0 if all(c == 0 for c in codes) else 1


def run_streets(args: argparse.Namespace) -> int:
    """Every adaptation recipe on every street, development and held-out apart."""
    # loaded here: the benchmark pulls the detector (torch, Ultralytics), the tracker and the renderer
    from pipeline.bench.street_streams import overlapping, parse_seeds
    from pipeline.bench.streets import bench_streets, images_by_shape, write_page
    from pipeline.detect.config import DetectorConfig
    from pipeline.detect.detector import Detector
    from pipeline.filter.camera_adaptation import ReferenceData
    from pipeline.filter.filter_file import load_filter, with_filter_features
    from pipeline.filter.id_collection import collect_id_boxes
    from pipeline.filter.outlier_collection import collect_outlier_boxes

    development = parse_seeds(args.development, "--development")
    held_out = parse_seeds(args.held_out, "--held-out")
    if overlapping(development, held_out):
        raise GhostboxError(f"--development and --held-out share seeds {overlapping(development, held_out)}")
    if not 0 < args.calibration_frames < args.frames:
        raise GhostboxError(f"--calibration-frames must be between 1 and --frames - 1 ({args.frames - 1}), got "
                            f"{args.calibration_frames}")
    default_path = ASSETS / "filters" / f"{DEFAULT_MODEL_NAME}{FILTER_SUFFIX}"
    filter_path = Path(args.filter_path) if args.filter_path else default_path
    bundled = load_filter(filter_path)
    crops = bundled.needs_crops
    config = with_filter_features(DetectorConfig(model=str(default_model()), batch=16), [str(filter_path)])
    detector = Detector(config)
    bundled.check_detector(detector.fingerprint())
    reference = None
    if not args.no_refit:
        world = Path(args.world)
        _world(world, 0)
        ids = collect_id_boxes(detector, str(world / "id" / "train"), conf=detector.config.conf, crops=crops)
        outliers, _ = collect_outlier_boxes(detector, [str(world / "ood" / "pool")], conf=detector.config.conf,
                                            crops=crops)
        reference = ReferenceData(ids, outliers)
    result = bench_streets(detector, bundled, development, held_out, reference, Path(args.cache), args.frames,
                           args.calibration_frames, progress=print)
    if args.filter_path:
        result["filter"] = str(filter_path)
    if not args.no_refit:
        val = collect_id_boxes(detector, str(world / "id" / "val"), conf=detector.config.conf, crops=crops)
        near, _ = collect_outlier_boxes(detector, [str(world / "ood" / "near_test")], conf=detector.config.conf,
                                        crops=crops)
        far, _ = collect_outlier_boxes(detector, [str(world / "ood" / "far_test")], conf=detector.config.conf,
                                       crops=crops)
        result["images"] = {"world": str(world), "shapes": images_by_shape(bundled, val.boxes, near, far)}
    for group, data in result["groups"].items():
        for recipe, by_verdict in data["summary"].items():
            s = by_verdict["frame"]
            if s["id_flagged_median"] is None:
                continue
            print(f"{group:<12} {recipe:<24} ID flagged median {100 * s['id_flagged_median']:5.1f}% (within 5+-2 on "
                  f"{s['within']} of {s['streets']}), caught median "
                  f"{100 * (s['caught_median'] or 0):5.1f}%")
    _written(write_page(args.out, result, command_line(args)))
    return 0


def run_gpu(args: argparse.Namespace) -> int:
    """The CUDA backends against the CPU and in `ghostbox run`; without CUDA, one line and exit 0. A backend
    unavailable here (no ONNX export, no CUDA provider) is named in the verdict and does not fail the command."""
    # loaded here: the check pulls torch (and, on CUDA, the detector, ONNX export and the supervisor)
    from pipeline.bench.gpu_check import bench_gpu, cuda_available, no_cuda_line, summary_line, table_text

    given = _given(args)
    try:
        streams = _listed(_setting(args, "streams"), int)
    except ValueError as exc:
        raise GhostboxError(f"--streams: expected comma-separated numbers, got '{args.streams}'") from exc
    if not streams or min(streams) < 1 or any(v < 1 for k, v in given.items() if k != "streams"):
        raise GhostboxError("--streams, --imgsz, --parity-frames, --frames, --batch and --workers must be >= 1")
    if not cuda_available():  # CI and CPU machines: nothing to measure, and that is not a failure
        print(no_cuda_line())
        return 0
    result = bench_gpu(args.model or str(default_model()), **{**given, "streams": streams},
                       progress=lambda line: print(line, flush=True))  # progress shows as it goes, piped or not
    print(table_text(result))
    print(summary_line(result))  # names the backends not measured (unavailable here), with why
    _written(write_result(args.out, "gpu", result, command_line(args)))
    return 0 if result["passed"] else 1


def run_cpu(args: argparse.Namespace) -> int:
    """`ghostbox run` on the CPU fast path against Ultralytics; exit 1 when a run failed (targets are figures)."""
    from pipeline.bench.cpu_fast_path import bench_cpu, table_lines  # loads cv2 and the stream config

    result = bench_cpu(args.model or str(default_model()), Path(args.video) if args.video else None,
                       calibration=Path(args.calibration) if args.calibration else None,
                       workdir=Path(args.workdir) if args.workdir else None,
                       progress=lambda line: print(line, flush=True), **_given(args))
    print("\n".join(table_lines(result)))
    _written(write_result(args.out, "cpu", result, command_line(args)))
    return 1 if result["failures"] else 0
