"""One fine-tuning setting over several seeds: every figure as a mean and spread, never the best run.

    OUT/seed-K/        a whole `ghostbox finetune` run with training seed K (resumable on its own)
    OUT/seeds.json     {"seeds": [...], "figures": {name: {"mean", "sd", "min", "max", "n", "values"}}}
    OUT/seeds.md       the same as a table: mean +- sd (min-max) and each seed's value

A seed that already finished with the same settings (its finetune.json) is reused, so an
interrupted sweep continues where it stopped; one cut short mid-training resumes from its
last.pt. The seed moves a run more than most settings do, which is why settings are compared
on these means, with their spread beside them.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import GhostboxError
from pipeline.finetune.mining_rounds import METHOD_FIELDS
from pipeline.finetune.training_run import FinetuneJob
from pipeline.json_files import replace_text, write_json
from pipeline.page_stamp import header_line, made

log = logging.getLogger(__name__)

# figures of a comparison (pipeline.finetune.comparison) that are fractions, shown as percentages
PERCENT_PARTS = ("reduction", "id_tp_lost_by_filter")


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-2' -> [0, 1, 2]."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            low, _, high = part.partition("-")
            seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    except ValueError:
        raise GhostboxError(f"--seeds {text!r}: expected seeds like 0,1,2 or 0-2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise GhostboxError(f"--seeds {text!r}: give distinct seeds >= 0, like 0,1,2")
    return seeds


def figures(comparison: dict[str, Any]) -> dict[str, float]:
    """The numbers of one comparison, by dotted name (e.g. `ood.near_test.reduction.finetuned_filtered`)."""
    out: dict[str, float] = {}

    def walk(value: Any, name: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{name}.{key}" if name else str(key))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)

    walk({k: v for k, v in comparison.items() if k in ("id", "id_tp_lost_by_filter", "ood")}, "")
    return out


def spread(values: Sequence[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values), "values": list(values)}


def summary_figures(summary: dict[str, Any]) -> dict[str, float]:
    """A run's figures (its final comparison), and those of its earlier mining rounds as `round-K.<name>`."""
    out = figures(summary["comparison"])
    rounds = summary.get("round_comparisons") or {}
    if rounds:  # a run whose rounds ended early (nothing left to mine) shows here
        out["rounds_done"] = float(len(rounds))
    for key, comparison in rounds.items():
        if int(key) < len(rounds):
            out.update({f"round-{key}.{name}": value for name, value in figures(comparison).items()})
    return out


def aggregate(comparisons: dict[int, dict[str, Any]], per_seed: dict[int, dict[str, float]] | None = None
              ) -> dict[str, Any]:
    """Mean and spread of every figure the seeds' comparisons (or their `per_seed` figures) share."""
    if per_seed is None:
        per_seed = {seed: figures(c) for seed, c in comparisons.items()}
    names = sorted(set.intersection(*(set(f) for f in per_seed.values()))) if per_seed else []
    return {"seeds": list(comparisons), "figures": {
        name: spread([per_seed[seed][name] for seed in comparisons]) for name in names}}


def _format(name: str) -> tuple[float, int, str]:
    """(scale, decimals, unit) a figure is shown with."""
    if any(f".{part}." in f".{name}." for part in PERCENT_PARTS):
        return 100.0, 1, "%"
    if name.endswith("change_points"):
        return 1.0, 2, " pt"
    if name.startswith("id.map"):
        return 1.0, 4, ""
    if ".hallucinations." in name:
        return 1.0, 1, ""
    return 1.0, 3, ""


def _cell(name: str, stats: dict[str, Any]) -> list[str]:
    scale, digits, unit = _format(name)

    def show(value: float) -> str:
        return f"{scale * value:.{digits}f}{unit}"

    return [f"{show(stats['mean'])} +- {show(stats['sd'])}", f"{show(stats['min'])} - {show(stats['max'])}",
            ", ".join(show(v) for v in stats["values"])]


def seeds_markdown(result: dict[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in result["seeds"])
    made = [header_line(result["made"]), ""] if "made" in result else []
    lines = [f"# Fine-tuning over seeds {seeds}", "", *made,
             "Mean +- sample standard deviation over the seeds, the range, and each seed's value (in the order "
             "of the seeds). Reductions are against the original model without a filter; "
             "`hallucinations.*` are counts.", "",
             "| figure | mean +- sd | min - max | per seed |", "|---|---|---|---|"]
    for name, stats in result["figures"].items():
        if ".fpr95." in name or name.endswith(".images"):
            continue  # per-score FPR95s stay in seeds.json; the table keeps what settings are chosen on
        lines.append(f"| {name} | " + " | ".join(_cell(name, stats)) + " |")
    return "\n".join(lines) + "\n"


def _reusable(summary_path: Path, job: FinetuneJob) -> dict[str, Any] | None:
    """A finished seed's summary, when it was made with these settings."""
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return None
    same = (summary.get("settings") == job.training.model_dump(mode="json") and summary.get("id") == job.id_spec
            and summary.get("proxies") == job.proxies and summary.get("ood") == job.ood_specs
            and summary.get("proxy_ratio") == job.proxy_ratio and "comparison" in summary
            and summary.get("method") == job.model_dump(mode="json", include=METHOD_FIELDS))
    return summary if same else None


def run_seeds(job: FinetuneJob, seeds: Sequence[int], run: Callable[[FinetuneJob], dict[str, Any]],
              command: str = "") -> dict[str, Any]:
    """`run` (`run_finetune`) once per seed into OUT/seed-K; then OUT/seeds.json and OUT/seeds.md, stamped with
    the date, machine, commit and `command`."""
    if not job.ood_specs:
        raise GhostboxError("--seeds compares the seeds' before/after figures: give --val and --ood")
    out = Path(job.out).resolve()
    comparisons: dict[int, dict[str, Any]] = {}
    per_seed: dict[int, dict[str, float]] = {}
    for seed in seeds:
        seed_job = job.model_copy(update={
            "out": out / f"seed-{seed}", "training": job.training.model_copy(update={"seed": seed}),
            "resume": True})  # a seed cut short continues from its last.pt; a new one starts
        summary = _reusable(seed_job.out / "finetune.json", seed_job)
        if summary is not None:
            log.info("seed %d: finished before with these settings; its figures are reused", seed)
        else:
            log.info("seed %d of %s", seed, list(seeds))
            summary = run(seed_job)
        comparisons[seed] = summary["comparison"]
        per_seed[seed] = summary_figures(summary)
    result = aggregate(comparisons, per_seed)
    result["settings"] = job.training.model_dump(mode="json", exclude={"seed"})
    result["runs"] = {seed: str(out / f"seed-{seed}") for seed in seeds}
    result["made"] = made(command)
    write_json(out / "seeds.json", result)
    replace_text(out / "seeds.md", seeds_markdown(result))
    return result
