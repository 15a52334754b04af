"""`ghostbox health`: are the streaming stages here still answering (a container's HEALTHCHECK)?"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    # pipeline.stream.health is standard library only: importing it loads no zmq, torch or pydantic
    from pipeline.stream import health

    parser = sub.add_parser(
        "health", help="exit 0 when every streaming stage here still answers (a container's health check)",
        description="Judges each `ghostbox stage` / `ghostbox run` stage process on this machine (in a container: "
                    "the container's) by its progress file, which every turn of its loop rewrites: older than "
                    "--max-age is a stuck stage. No stage running: healthy (nothing to judge). The image's "
                    "HEALTHCHECK runs the same check as `python -m pipeline.stream.health`.",
    )
    health.add_arguments(parser)
    parser.set_defaults(handler=health.run)
