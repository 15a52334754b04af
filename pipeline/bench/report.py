"""Benchmark figures as files: JSON, or a markdown table headed by when, where and how it was made.

`write_result(out, what, result, command)` writes what `ghostbox bench ... --out OUT` asks for:

    OUT ends in .json   the figures as JSON (with a `made` block: date, machine, commit, command)
    OUT ends in .md     the same figures as markdown tables under a header line
    otherwise           a folder: OUT/<what>.md and OUT/<what>.json

The header line says the date (UTC), the machine (CPU model, cores, GPU or none, RAM), the
ghostbox commit and the exact command, so a table in docs/ is never a hand-copied figure of
unknown origin: re-run the command to refresh it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.json_files import replace_text
from pipeline.page_stamp import REPO, header_line, made

GENERATED = "<!-- written by ghostbox bench; do not edit by hand: re-run the command in the header line -->"


# -- markdown per benchmark ------------------------------------------------------------------------

def short_path(path: str) -> str:
    """A path inside the checkout as a relative one, so that tables do not name one machine's folders."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(str(c) for c in row) + " |" for row in rows], ""]


def _detector_md(r: dict[str, Any]) -> list[str]:
    width, height = r["frame_size"]
    lines = [f"Model `{short_path(r['model'])}`, imgsz {r['imgsz']}, {r['frames']} frames of {width}x{height}, "
             f"one frame per call, CPU; median of {r['rounds']} interleaved rounds (after one warm-up round).", ""]
    twin = {"ghostbox-pt": "pt", "ghostbox-pt-roi": "pt-roi", "ghostbox-onnx": "onnx"}
    rows = []
    for name, fps in r["fps"].items():
        ratio = r["ghostbox_over_ultralytics"].get(twin.get(name, ""))
        rows.append([f"`{name}`", f"{fps:.2f}", f"{r['ms_per_frame'][name]:.2f}", r["boxes"][name],
                     f"{ratio:.3f}x" if ratio is not None else ""])
    lines += table(["runner", "frames/s", "ms/frame", "boxes", "ghostbox / Ultralytics"], rows)
    lines += ["Runners: `ultralytics-*` is `YOLO(model).predict(stream=True)`; `ghostbox-pt` is `Detector.detect` "
              "with logits and `head` box features, `ghostbox-pt-roi` the same with `head+roi`; `*-onnx` run "
              "Ultralytics' own ONNX export and ghostbox's (`ghostbox export`) under ONNX Runtime.", ""]
    return lines


def _filter_md(r: dict[str, Any]) -> list[str]:
    frame_ms = r["detector_ms_per_frame"]
    lines = [f"Scoring {r['batch']} boxes (half ID, half OoD; {r['feature_dim']}-d features, {r['num_classes']} "
             f"classes), each score fitted on {r['fit_boxes']:,} boxes; median of {r['repeats']} calls. Yardstick: "
             f"the detector `{short_path(r.get('model', '?'))}` at imgsz {r.get('imgsz', '?')} on 1280x720 frames, "
             f"{frame_ms:.2f} ms a frame on the CPU, measured in the same run.", ""]
    rows = [[f"`{name}`", f"{ms:.3f}", f"{100 * ms / frame_ms:.2f}%", f"{r['fit_s'][name]:.2f}"]
            for name, ms in r["ms_per_batch"].items()]
    lines += table(["score", f"ms per {r['batch']} boxes", "of a frame", "fit s"], rows)
    knn = r.get("knn_bank")
    if knn:
        rows = [[label.replace("_", " "), f"{knn[f'{label}_ms']:.3f}", f"{knn[f'{label}_fit_s']:.2f}"]
                for label in ("faiss_auto", "faiss_flat", "numpy") if f"{label}_ms" in knn]
        lines += [f"`knn` over a {knn['bank']:,}-feature bank (faiss auto chose `{knn.get('faiss_auto_index')}`"
                  + (f", {knn['ivf_cells']:,} cells, nprobe {knn['ivf_nprobe']}" if knn.get("ivf_cells") else "")
                  + "):", ""]
        lines += table(["search", f"ms per {r['batch']} boxes", "fit s"], rows)
    abet = r.get("abet_train_s")
    if abet:
        lines += [f"`abet` training: {abet['seconds']:.2f} s for {abet['boxes']:,} boxes, {abet['epochs']} epochs.",
                  ""]
    return lines


def _workers_text(r: dict[str, Any]) -> str:
    plan = r.get("workers")
    if not isinstance(plan, dict):  # pages made before the workers were chosen for the machine: one worker
        return "one worker"
    return f"{plan['count']} worker(s) with {plan['threads']} torch thread(s) each ({plan['why']})"


def _stream_md(r: dict[str, Any]) -> list[str]:
    tp = r["throughput"]
    lines = [f"Model `{short_path(r['model'])}`, imgsz {r['imgsz']}, worker batch {r['batch']}, "
             f"a {r['frames']}-frame video (`{Path(r['video']).name}`); CPU.", "",
             f"**Throughput** (lossless `ghostbox run`, {_workers_text(r)}, JSONL sink, against "
             "`YOLO(model).predict(video, stream=True)`; rounds alternate, median):", ""]
    lines += table(["runner", "frames/s", "rounds"], [
        ["`ghostbox run`", f"{tp['ghostbox_fps']:.2f}", ", ".join(f"{v:.1f}" for v in tp["rounds"]["ghostbox"])],
        ["Ultralytics `predict(stream=True)`", f"{tp['ultralytics_fps']:.2f}",
         ", ".join(f"{v:.1f}" for v in tp["rounds"]["ultralytics"])],
        ["ghostbox / Ultralytics", f"{tp['ghostbox_over_ultralytics']:.3f}x", ""],
        ["`ghostbox run` including process start-up", f"{tp['ghostbox_wall_fps_with_startup']:.2f}", ""],
    ])
    stages = tp.get("pipeline_stages_ms") or {}
    if stages:
        lines += ["Inside the pipeline (ms, last throughput run; queueing included):", ""]
        keys = [k for k in ("p50", "p95", "p99") if any(k in v for v in stages.values())]
        lines += table(["stage / hop", *keys], [[f"`{name}`", *(v.get(k, "") for k in keys)]
                                                  for name, v in stages.items()])
    lines += ["**Transport**, one hop (round trip / 2, encoding and validation included):", ""]
    lines += table(["hop / message", "p50 ms", "p99 ms", "bytes"],
                    [[name, f"{v['p50_ms']:.3f}", f"{v['p99_ms']:.3f}", f"{v['bytes']:,}"]
                     for name, v in r["transport"].items()])
    live = r.get("live")
    if live:
        lat = live.get("latency_ms", {})
        lines += [f"**Live** for {live['duration_s']:g} s, a {live['source_fps']:g} fps source: "
                  f"{live['frames_processed']} frames processed ({live['processed_fps']:.1f}/s), {live['dropped']} "
                  f"dropped at the source; latency p50 {lat.get('p50', 0):.0f} ms, p99 {lat.get('p99', 0):.0f} ms.",
                  ""]
        if "p99_first_third_ms" in live:
            lines += table(["latency p99", "first third", "last third", "trend"], [
                ["end to end", f"{live['p99_first_third_ms']:.0f} ms", f"{live['p99_last_third_ms']:.0f} ms",
                 f"{live['p99_slope_ms_per_min']:+.1f} ms/min"],
                ["without the detector's own time", f"{live['non_detect_p99_first_third_ms']:.0f} ms",
                 f"{live['non_detect_p99_last_third_ms']:.0f} ms",
                 f"{live['non_detect_p99_slope_ms_per_min']:+.1f} ms/min"],
            ])
    memory = r.get("memory")
    if memory and "total" in memory:
        lines += [f"**Memory** over a {memory['frames']}-frame lossless run ({memory['fps']:.1f} frames/s), resident "
                  "memory from the first tenth of the run to its end:", ""]
        rows = [[f"`{name}`", v["early_mb"], v["late_mb"], f"{v['growth_pct']:+.2f}%"]
                for name, v in memory["per_stage"].items()]
        total = memory["total"]
        rows.append(["all stages", total["early_mb"], total["late_mb"], f"{total['growth_pct']:+.2f}%"])
        lines += table(["stage", "early MB", "late MB", "growth"], rows)
    return lines


def _street_md(r: dict[str, Any]) -> list[str]:
    body = r["report_md"].replace(f"{REPO}/", "").splitlines()  # paths inside the checkout, relative
    if body and body[0].startswith("# "):
        body = body[1:]  # our own title stands above it
    while body and not body[0].strip():
        body = body[1:]
    made_world = (f"generated in {r['synth_s']:.0f} s" if r.get("synth_s") is not None else "reused")
    return [f"The street world of seed {r['seed']} (`{r['world']}`, {made_world}), evaluated in "
            f"{r['eval_s']:.0f} s by: `{r['eval_command']}`", "", *body, ""]


def _gpu_md(r: dict[str, Any]) -> list[str]:
    # the table itself comes from the bench module, so the page and the printed table are one table
    from pipeline.bench.gpu_check import summary_line, summary_rows

    ort = r.get("onnxruntime") or {}
    tf32 = r.get("tf32") or {}
    tol = r["tolerances"]
    lines = [f"Model `{short_path(r['model'])}`, imgsz {r['imgsz']}, on {r.get('gpu') or r.get('device')} (torch "
             f"{r['torch']}, CUDA {r['cuda']}, cuDNN {r['cudnn']}; TF32 for cuDNN convolutions "
             f"{'on' if tf32.get('cudnn') else 'off'}, for matmuls {'on' if tf32.get('matmul') else 'off'}; "
             f"onnxruntime {ort.get('version', 'not installed')}"
             + (f" with {', '.join(ort['providers'])}" if ort.get("providers") else "") + ").", "",
             f"**Parity** against the CPU PyTorch backend on {r['parity_frames']} frames of the street world's "
             f"stream ({r['imgsz']} px): logits and features of every anchor of the same letterboxed input, as max "
             "|difference| over the CPU output's largest magnitude ('rel'); boxes as detections matched by class "
             f"and IoU >= {tol['match_iou']:g}, the largest corner difference in pixels; 'unmatched' counts boxes "
             "kept on one side only, over the CPU's boxes. "
             f"**Throughput**: lossless `ghostbox run`, {r['workers']} worker(s) of batch {r['batch']}, no filter, "
             f"no tracks, JSONL sink, on {r['frames']} frames a run split over 1 to "
             f"{max(r['streams']) if r['streams'] else 0} looped copies of a generated {r['imgsz']}-px street video; "
             "frames/s from the first detection to the last row written (process start-up apart). GPU MiB: the "
             "largest `nvidia-smi` memory.used during the backend's runs above its value just before the run.", ""]
    head, rows = summary_rows(r)
    verdict = summary_line(r)  # the printed verdict: names the backends not measured here
    lines += table(head, rows)
    lines += ["Tolerances (`pipeline/bench/gpu_check.py`, where each is argued): logits and features rel "
              + ", ".join(f"{k} {v:g}" for k, v in tol["features_rel"].items()) + "; boxes "
              + ", ".join(f"{k} {v:g} px" for k, v in tol["boxes_px"].items()) + "; unmatched "
              + ", ".join(f"{k} {100 * v:g}%" for k, v in tol["unmatched"].items()) + ". "
              + (verdict[0].upper() + verdict[1:] + "." if r["passed"] else f"**{verdict}**."), ""]
    runs = r.get("runs") or []
    if runs:
        lines += ["Every run:", ""]
        lines += table(["backend", "streams", "frames", "frames/s", "with start-up", "GPU MiB peak (above before)",
                        "exit"],
                       [[f"`{run['backend']}`", run["streams"], f"{run['rows']}/{run['frames']}",
                         "" if run["fps"] is None else f"{run['fps']:.1f}",
                         "" if run["wall_fps"] is None else f"{run['wall_fps']:.1f}",
                         (f"{run['gpu_memory']['peak_used_mib']} (+{run['gpu_memory']['peak_above_baseline_mib']})"
                          if run.get("gpu_memory") else "n/a"),
                         run["code"] if run["error"] is None else f"{run['code']}: {run['error']}"] for run in runs])
    peaks = {name: row["peak_allocated_mib"] for name, row in r["parity"].items()
             if row.get("peak_allocated_mib") is not None}
    if peaks:
        lines += ["PyTorch's own peak allocation during the parity step (batch "
                  f"{r['batch']}): " + ", ".join(f"`{k}` {v:g} MiB" for k, v in peaks.items()) + ".", ""]
    return lines


def _cpu_md(r: dict[str, Any]) -> list[str]:
    from pipeline.bench.cpu_fast_path import page_lines  # the bench's own table: the page and the print agree

    return page_lines(r)


_MARKDOWN = {"detector": ("Detector speed: ghostbox against Ultralytics", _detector_md),
             "filter": ("Scoring cost per frame", _filter_md),
             "stream": ("Streaming: `ghostbox run` against Ultralytics", _stream_md),
             "street": ("The street world as a benchmark", _street_md),
             "gpu": ("The CUDA backends: parity with the CPU, `ghostbox run` frames/s, GPU memory", _gpu_md),
             "cpu": ("The CPU fast path: `ghostbox run` against Ultralytics, whole processes", _cpu_md)}


def markdown(what: str, result: dict[str, Any]) -> str:
    title, body = _MARKDOWN[what]
    lines = [f"# {title}", "", GENERATED, "", header_line(result["made"]), "", *body(result)]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def write_result(out: str | Path | None, what: str, result: dict[str, Any], command: str,
                 page: Callable[[dict[str, Any]], str] | None = None) -> list[Path]:
    """Stamp `result` with how it was made and write it where `out` says; the paths written.
    `page` renders the markdown of a bench whose page is not one of this module's."""
    result["made"] = made(command)
    if not out:
        return []
    path = Path(out)
    if path.suffix == ".json":
        targets = {"json": path}
    elif path.suffix == ".md":
        targets = {"md": path}
    else:
        targets = {"md": path / f"{what}.md", "json": path / f"{what}.json"}
    for kind, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        render = page or (lambda r: markdown(what, r))
        text = render(result) if kind == "md" else json.dumps(result, indent=2) + "\n"
        replace_text(target, text)
    return list(targets.values())
