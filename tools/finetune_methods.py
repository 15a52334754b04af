"""Fine-tuning methods side by side, from the `seeds.json` files `ghostbox finetune --seeds` writes.

    python tools/finetune_methods.py "background (round 1)=runs/ft-rounds/seeds.json:round-1" \
        "mining, 2 rounds=runs/ft-rounds/seeds.json" "unknown class=runs/ft-unknown/seeds.json" \
        --out docs/benchmarks/finetune-methods.md

Each argument is LABEL=SEEDS_JSON[:PREFIX]; PREFIX picks an earlier round's figures
(`round-1`) of a multi-round sweep. Every cell is mean +- sample sd over the file's seeds;
the page is headed with how each file was made (date, machine, commit, command).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pipeline.finetune.seeds import spread  # noqa: E402
from pipeline.json_files import replace_text  # noqa: E402
from pipeline.page_stamp import header_line  # noqa: E402

COLUMNS = (  # (heading, figure name, scale, unit)
    ("near-OoD removed, fine-tuning alone", "ood.near_test.reduction.finetuned", 100, "%"),
    ("near-OoD removed, with its filter", "ood.near_test.reduction.finetuned_filtered", 100, "%"),
    ("far-OoD removed, with its filter", "ood.far_test.reduction.finetuned_filtered", 100, "%"),
    ("ID mAP50 change", "id.map50.change_points", 1, " pt"),
    ("ID TPs flagged (val)", "id_tp_lost_by_filter.after", 100, "%"),
)
REFERENCE = ("near-OoD removed by the filter alone (original model)", "ood.near_test.reduction.original_filtered")


def cell(stats: dict[str, Any] | None, scale: float, unit: str) -> str:
    if stats is None:
        return "-"
    s = spread([scale * v for v in stats["values"]])
    return f"{s['mean']:.1f}{unit} +- {s['sd']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("methods", nargs="+", metavar="LABEL=SEEDS_JSON[:PREFIX]")
    parser.add_argument("--out", help="markdown file to write (default: print)")
    args = parser.parse_args()
    rows, made, reference = [], [], None
    for spec in args.methods:
        label, _, where = spec.partition("=")
        path, _, prefix = where.partition(":")
        if not label or not path:
            parser.error(f"{spec!r}: expected LABEL=SEEDS_JSON[:PREFIX]")
        result = json.loads(Path(path).read_text())
        figures = {name.removeprefix(f"{prefix}."): stats for name, stats in result["figures"].items()
                   if not prefix or name.startswith(f"{prefix}.")}
        seeds = ", ".join(str(s) for s in result["seeds"])
        rows.append(f"| {label} | {seeds} | " + " | ".join(cell(figures.get(name), scale, unit)
                                                        for _, name, scale, unit in COLUMNS) + " |")
        reference = reference or figures.get(REFERENCE[1])
        if "made" in result and path not in [m[0] for m in made]:
            made.append((path, header_line(result["made"])))
    lines = ["# Fine-tuning methods over seeds", "",
             "Written by `tools/finetune_methods.py` from the `seeds.json` of each sweep. Each cell: mean +- sample "
             "standard deviation over the seeds (min-max). Reductions are of the original model's hallucinations "
             "without a filter; the filters are re-fitted on each fine-tuned model with thresholds set on ID images "
             "held out of the fine-tune.", ""]
    if reference is not None:
        lines += [f"Reference: {REFERENCE[0]}: {cell(reference, 100, '%')}.", ""]
    lines += ["| method | seeds | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS),
              *rows, ""]
    for path, line in made:
        lines += [f"- `{path}`: {line}"]
    text = "\n".join(lines) + "\n"
    if args.out:
        replace_text(Path(args.out), text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
