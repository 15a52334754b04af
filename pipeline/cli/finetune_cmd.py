"""`ghostbox finetune`: fine-tune a detector with OoD proxies as background, and measure the gain."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.bundled import default_model
from pipeline.cli.settings_args import SettingsFlags, SettingsHelpFormatter
from pipeline.config_files import defaults_yaml, only_sections, read_yaml, section

if TYPE_CHECKING:
    from pipeline.finetune.training_run import FinetuneJob

SECTIONS = ("finetune",)  # of a --config file
# The settings' home. Importing pipeline.finetune loads the evaluation's plots and torch (seconds), so the
# flags' help reads their defaults only when printed, and the models are imported when a command needs them.
JOB = "pipeline.finetune.training_run:FinetuneJob"
TRAINING = "pipeline.finetune.training_run:FinetuneSettings"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "finetune",
        help="fine-tune the detector with OoD proxies labelled as background; before/after comparison",
        description="Builds the Ultralytics training set (ID training images plus proxy images from "
        "`ghostbox proxies`, unlabelled regions = background), evaluates the original model, fine-tunes, "
        "re-fits the filter on the fine-tuned model and evaluates again. Writes OUT/model.pt, "
        "OUT/filters/, OUT/comparison.json|md|png and OUT/finetune.json.",
        formatter_class=SettingsHelpFormatter,
    )
    flags = SettingsFlags("finetune_flags")
    flags.add(parser, "--model", "-m", model=JOB, field="model",
              help="detector to start from (default: the bundled street-world model)")
    flags.add(parser, "--id", model=JOB, field="id_spec", metavar="SPEC")
    flags.add(parser, "--proxies", model=JOB, field="proxies", nargs="+", metavar="DIR")
    flags.add(parser, "--val", model=JOB, field="val_spec", metavar="SPEC")
    flags.add(parser, "--ood", model=JOB, field="ood_specs", action="append", metavar="SPEC",
              help="OoD test set for the before/after comparison (repeatable); needs --val")
    flags.add(parser, "--filter", model=JOB, field="filter_path", metavar="FILE")
    flags.add(parser, "--filter-method", model=JOB, field="filter_method")
    flags.add(parser, "--filter-params", model=JOB, field="filter_params", metavar="JSON",
              help="JSON parameters of --filter-method")
    flags.add(parser, "--outliers", model=JOB, field="outliers", nargs="+", metavar="SPEC")
    flags.add(parser, "--outlier-conf", model=JOB, field="outlier_conf", type=float)
    flags.add(parser, "--calibration-id", model=JOB, field="calibration_id", metavar="SPEC|DIR|VIDEO")
    flags.add(parser, "--proxy-ratio", model=JOB, field="proxy_ratio", type=float)
    for name, kind in (("epochs", int), ("lr0", float), ("lrf", float), ("mosaic", float), ("close_mosaic", int),
                       ("freeze", int), ("imgsz", int), ("batch", int), ("device", str), ("workers", int),
                       ("threads", int), ("seed", int)):
        flags.add(parser, "--" + name.replace("_", "-"), model=TRAINING, field=name, path=("training", name),
                  type=kind)
    flags.add(parser, "--unknown-class", model=JOB, field="unknown_class", action="store_true")
    flags.add(parser, "--rounds", model=JOB, field="rounds", type=int)
    flags.add(parser, "--mine-pool", model=JOB, field="mine_pool", metavar="SPEC")
    flags.add(parser, "--mine-count", model=JOB, field="mine_count", type=int)
    flags.add(parser, "--mine-images", model=JOB, field="mine_images", type=int)
    flags.add(parser, "--mine-conf", model=JOB, field="mine_conf", type=float)
    flags.add(parser, "--resume", model=JOB, field="resume", action="store_true")
    parser.add_argument("--seeds", metavar="LIST",
                        help="the same settings once per training seed (e.g. 0,1,2 or 0-2) into OUT/seed-K/, then the "
                        "mean and spread of every figure in OUT/seeds.json|md (needs --val and --ood); finished "
                        "seeds are reused, one cut short resumes")
    flags.add(parser, "--out", "-o", model=JOB, field="out")
    parser.add_argument("--config", "-c", metavar="FILE.yaml",
                        help="YAML config whose `finetune:` section holds these settings (training ones under "
                        "`training:`); flags win over it (`ghostbox config finetune` prints the defaults)")
    flags.attach(parser)
    parser.set_defaults(handler=run)


def finetune_job(args: argparse.Namespace) -> FinetuneJob:
    """The job from --config's `finetune:` section and the flags over it (the bundled model unless one is named)."""
    from pipeline.finetune.training_run import FinetuneJob

    data, where = {}, f"config '{args.config}'"
    if args.config:
        data = read_yaml(args.config)
        only_sections(data, SECTIONS, where)
    own = {"model": str(default_model()), **section(data, "finetune", where)}
    flags: SettingsFlags = args.finetune_flags
    return flags.build(FinetuneJob, args, own, args.config, "finetune")


def default_config() -> str:
    """`ghostbox config finetune`: the defaults, as a --config file."""
    from pipeline.finetune.training_run import FinetuneJob

    return ("# ghostbox finetune --config FILE: command-line flags win over these values.\n"
            + defaults_yaml({"finetune": FinetuneJob},
                            notes={"finetune.model": "detector to start from (default: the bundled street-world "
                                   "model)"}))


def run(args: argparse.Namespace) -> int:
    # torch and matplotlib load with the scores and the evaluation (seconds): only when a job runs, not for --help
    from pipeline.filter.fit_from_data import parse_methods
    from pipeline.finetune.comparison import comparison_markdown
    from pipeline.finetune.workflow import run_finetune

    job = finetune_job(args)
    if job.filter_method:
        method, params = parse_methods(job.filter_method, job.filter_params)
        job = job.model_copy(update={"filter_method": method, "filter_params": params})
    if args.seeds:
        from pipeline.finetune.seeds import parse_seeds, run_seeds, seeds_markdown

        result = run_seeds(job, parse_seeds(args.seeds), run_finetune, "ghostbox " + shlex.join(sys.argv[1:]))
        print(seeds_markdown(result))
        print(f"details in {Path(job.out) / 'seeds.json'}; each seed's run in {Path(job.out) / 'seed-K'}")
        return 0
    summary = run_finetune(job)
    print(f"fine-tuned model: {summary['finetuned_model']}")
    if "comparison" in summary:
        print(comparison_markdown(summary["comparison"]))
    print(f"took {summary['timings']['total_s']:.0f} s; details in {Path(job.out) / 'finetune.json'}")
    return 0
