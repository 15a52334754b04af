"""`ghostbox finetune`: fine-tune a detector with OoD proxies as background, and measure the gain."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "finetune",
        help="fine-tune the detector with OoD proxies labelled as background; before/after comparison",
        description="Builds the Ultralytics training set (ID training images plus proxy images from "
        "`ghostbox proxies`, unlabelled regions = background), evaluates the original model, fine-tunes, "
        "re-fits the filter on the fine-tuned model and evaluates again. Writes OUT/model.pt, "
        "OUT/filters/, OUT/comparison.json|md|png and OUT/finetune.json.",
    )
    parser.add_argument("--model", "-m", help="detector to start from (default: the bundled street-world model)")
    parser.add_argument("--id", dest="id_spec", required=True, metavar="SPEC", help="labelled ID training data")
    parser.add_argument("--proxies", nargs="+", required=True, metavar="DIR", help="proxy sets from `ghostbox proxies`")
    parser.add_argument("--val", dest="val_spec", metavar="SPEC", help="labelled ID validation data (for mAP)")
    parser.add_argument("--ood", dest="ood_specs", action="append", default=[], metavar="SPEC",
                        help="OoD test set for the before/after comparison (repeatable); needs --val")
    parser.add_argument("--filter", dest="filter_path", metavar="FILE",
                        help="the original model's filter: the same method is re-fitted on the fine-tuned model")
    parser.add_argument("--filter-method", help="a score to fit on both models (e.g. oe, energy, knn,mahalanobis)")
    parser.add_argument("--filter-params", default="{}", help="JSON parameters of --filter-method")
    parser.add_argument("--outliers", nargs="+", metavar="SPEC",
                        help="outlier data for scores that learn from it (default: the proxy sets)")
    parser.add_argument("--outlier-conf", type=float, help="confidence of outlier detections (default 0.25)")
    parser.add_argument("--calibration-id", metavar="SPEC|DIR|VIDEO",
                        help="ID data kept out of the fine-tune that sets the filters' thresholds (default: "
                        "images held out of --id)")
    parser.add_argument("--proxy-ratio", type=float, default=1.0, help="proxy images per ID training image")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr0", type=float, default=0.003)
    parser.add_argument("--lrf", type=float, default=0.1, help="final learning rate as a fraction of --lr0 (linear)")
    parser.add_argument("--mosaic", type=float, default=1.0, help="probability of a 4-image mosaic per sample")
    parser.add_argument("--close-mosaic", type=int, default=2, help="last N epochs on whole images, no mosaic")
    parser.add_argument("--freeze", type=int, default=0, help="freeze the first N layers")
    parser.add_argument("--imgsz", type=int, help="training size (default: the model's)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2, help="data-loading workers")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for training (default: every core this process may use)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    parser.add_argument("--out", "-o", required=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.bundled import default_model
    from pipeline.errors import GhostboxError
    from pipeline.filter.fit_from_data import parse_methods, parse_params
    from pipeline.finetune.training_run import FinetuneSettings
    from pipeline.finetune.workflow import FinetuneJob, run_finetune

    method, params = None, parse_params(args.filter_params, "--filter-params")
    if args.filter_method:
        method, params = parse_methods(args.filter_method, params)
    try:
        settings = FinetuneSettings(epochs=args.epochs, lr0=args.lr0, lrf=args.lrf, mosaic=args.mosaic,
                                    close_mosaic=args.close_mosaic, freeze=args.freeze, imgsz=args.imgsz,
                                    batch=args.batch, device=args.device, workers=args.workers, seed=args.seed,
                                    threads=args.threads)
    except ValueError as exc:
        raise GhostboxError(f"finetune settings: {exc}") from exc
    job = FinetuneJob(model=str(args.model or default_model()), id_spec=args.id_spec, proxies=list(args.proxies),
                      out=Path(args.out), val_spec=args.val_spec, ood_specs=list(args.ood_specs),
                      filter_path=args.filter_path, filter_method=method, filter_params=params,
                      outliers=args.outliers, outlier_conf=args.outlier_conf, calibration_id=args.calibration_id,
                      proxy_ratio=args.proxy_ratio,
                      settings=settings, resume=args.resume)
    summary = run_finetune(job)
    print(f"fine-tuned model: {summary['finetuned_model']}")
    if "comparison" in summary:
        from pipeline.finetune.comparison import comparison_markdown

        print(comparison_markdown(summary["comparison"]))
    print(f"took {summary['timings']['total_s']:.0f} s; details in {Path(args.out) / 'finetune.json'}")
    return 0
