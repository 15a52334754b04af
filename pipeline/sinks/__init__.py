"""Where detections go, for the stream sinks and `ghostbox detect` alike: one `Output` interface
(`output.py`) with an output per kind of file (detections.jsonl, annotated videos and images, the
crop archives, the live view), the "drop" policy applied in one place (`policy.py`), and a run's
account with the summary.json it adds up to (`run_stats.py`, `summary_file.py`). It sits below
`pipeline.stream` and never imports it."""
