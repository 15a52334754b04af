"""`ghostbox review OUT`: the review page of a finished run (its tracks' gallery), until Ctrl-C."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.errors import GhostboxError

DEFAULT_ADDRESS = "8080"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "review", help="mark a run's tracks as real objects or hallucinations in the browser",
        description="Serves the gallery of OUT/tracks/ (written by `ghostbox run` for tracked sources). Each "
                    "answer is appended to OUT/review.jsonl, which `ghostbox proxies --flagged OUT` and "
                    "`ghostbox calibrate --reviewed OUT` read. `ghostbox run --web` serves the same page live.",
    )
    parser.add_argument("out", metavar="OUT", help="output folder of a `ghostbox run`")
    parser.add_argument("--web", default=DEFAULT_ADDRESS, metavar="[HOST:]PORT",
                        help=f"where to serve the page (default {DEFAULT_ADDRESS}, on loopback; bound elsewhere, "
                        "the printed URL carries a token)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.data.review_file import GALLERY_INDEX
    from pipeline.web.server import WebServer

    out = Path(args.out)
    if not (out / GALLERY_INDEX).is_file():
        raise GhostboxError(f"{out}: no {GALLERY_INDEX} (run `ghostbox run` with tracks on, e.g. --tracks, into "
                            "this folder first)")
    server = WebServer(out, args.web).start()
    print(f"review page: {server.url} (Ctrl-C to stop); answers go to {out / 'review.jsonl'}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
