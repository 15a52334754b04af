"""`ghostbox keys --out DIR NAME...`: CurveZMQ key pairs for encrypted, authenticated tcp endpoints."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.errors import GhostboxError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "keys", help="make CurveZMQ key pairs (NAME.key public, NAME.key_secret secret)",
        description="Typical: `ghostbox keys --out keys server client`, then `security: {curve: true, keys: keys}` "
                    "in the graph config. Binding machines need server.key_secret and the clients' .key files; "
                    "connecting machines need client.key_secret and server.key.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="one key pair per name")
    parser.add_argument("--roles", action="store_true",
                        help="key pairs server, source, worker, broker, filter, sink for `security: {roles: true}`")
    parser.add_argument("--token", action="store_true",
                        help="also write graph.token, the shared secret of a graph with `security: {insecure: true}`")
    parser.add_argument("--seal", action="store_true",
                        help="only seal.key (written with every key set anyway): the secret that sources, the filter "
                             "and sinks share so no other peer can forge a row or an end of stream")
    parser.add_argument("--out", "-o", required=True, help="folder for the key files")
    parser.add_argument("--force", action="store_true", help="replace existing key files")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # zmq loads with the stream package: only when keys are made, not for every command's --help
    from pipeline.stream.config import ID_PATTERN
    from pipeline.stream.provenance import SEAL_FILE, make_seal_key
    from pipeline.stream.security import ROLES, TOKEN_FILE, make_keypair, make_token, staged_key_set

    for name in args.names:
        if not ID_PATTERN.match(name):
            raise GhostboxError(f"key name '{name}': use letters, digits, '_', '.', '-'")
    if args.roles:
        args.names = list(dict.fromkeys([*args.names, "server", *ROLES]))
    if not args.names and not args.token and not args.seal:
        raise GhostboxError("keys: name at least one key pair (e.g. server client), or pass --roles, --token or "
                            "--seal")
    out = Path(args.out)
    if not args.force:  # every file checked before any is made: a refusal leaves the folder as it was
        taken = [out / f"{n}{suffix}" for n in args.names for suffix in (".key", ".key_secret")]
        taken += [out / TOKEN_FILE] if args.token else []
        taken += [out / SEAL_FILE] if args.seal else []
        for path in taken:
            if path.exists():
                raise GhostboxError(f"keys: '{path}' already exists (pass --force to replace it)")
    lines = []
    try:
        with staged_key_set(out) as stage:  # the whole set, or nothing
            for name in args.names:
                public, secret = make_keypair(stage, name)
                lines += [f"{out / public.name}  (public: give to peers)",
                          f"{out / secret.name}  (secret: keep on this machine, mode 600)"]
            if args.token:
                lines.append(f"{out / make_token(stage).name}  (secret: copy to every machine of the graph, mode 600)")
            if args.seal or not (out / SEAL_FILE).exists():  # a folder's one seal key stays unless asked for
                lines.append(f"{out / make_seal_key(stage / SEAL_FILE).name}  (secret: copy to the machines of "
                             f"sources, the filter and sinks, mode 600)")
            # the list goes out before the set moves in: a reader that stops early (`| head -1`) leaves no keys
            print("\n".join(lines), flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the unflushed rest goes nowhere
        print(f"ghostbox keys: error: standard output closed before the list of keys was written (broken pipe); "
              f"no keys written to '{out}'; run it again without `| head`", file=sys.stderr)
        return 1
    return 0
