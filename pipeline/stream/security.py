"""Who may connect to a graph's tcp endpoints: CurveZMQ by default, a graph token when `insecure`.

- CURVE (the default whenever a graph uses tcp): encrypted, and clients authorized by public key.
- `security.insecure: true`: nothing is encrypted, but peers still prove they hold the graph's
  token (ZMQ PLAIN, checked by the same ZAP handler), so a stray client on the network can
  neither inject messages nor attach a PULL socket and take a share of the detections.
- ipc endpoints: the run folder's mode (0700) keeps other users out.

Binding sides are CURVE servers with the `server` key pair and accept only clients whose
public key is listed in `authorized` (checked by a ZAP handler, pyzmq's ThreadAuthenticator);
connecting sides are CURVE clients with the `client` key pair and the server's public key.
Keys are the standard zmq certificate files (`NAME.key` public, `NAME.key_secret` secret,
Z85), written by `ghostbox keys --out DIR server client`.

What each machine needs: a machine whose stages bind tcp endpoints holds
`server.key_secret` and the authorized clients' `*.key`; a machine whose stages connect holds
`client.key_secret` and `server.key`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from pipeline.errors import GhostboxError

log = logging.getLogger(__name__)


TOKEN_FILE = "graph.token"
ROLES = ("source", "worker", "broker", "filter", "sink")  # client key names with `security.roles`
TOKEN_USER = b"ghostbox"


@contextmanager
def _private_files() -> Iterator[None]:
    """Files made inside are 0600 from their first byte (a chmod afterwards leaves a window)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def make_keypair(out_dir: str | Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write OUT/NAME.key (public) and OUT/NAME.key_secret (secret, mode 600 from the start)."""
    out = Path(out_dir)
    public, secret = out / f"{name}.key", out / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise GhostboxError(f"keys: '{public}' already exists (pass --force to replace it)")
    with _private_files():
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        made_public, made_secret = zmq.auth.create_certificates(str(out), name)
    os.chmod(made_public, 0o644)  # the public half is meant to be copied to peers
    return Path(made_public), Path(made_secret)


def make_token(out_dir: str | Path, force: bool = False) -> Path:
    """OUT/graph.token: the shared secret of an `insecure` graph's peers (mode 600 from the start)."""
    path = Path(out_dir) / TOKEN_FILE
    if path.exists() and not force:
        raise GhostboxError(f"keys: '{path}' already exists (pass --force to replace it)")
    with _private_files():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path


@contextmanager
def staged_key_set(out_dir: str | Path) -> Iterator[Path]:
    """A temporary folder to write a key set in, moved into `out_dir` when the block ends without an
    error and removed when it raises: a killed or failed `ghostbox keys` leaves no half of a set.

    A new `out_dir` is the temporary folder renamed (one step); into an existing one (a mount point,
    --force) each file is renamed from a temporary folder inside it (same filesystem, whole files only).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GhostboxError(f"keys: --out '{out}' is a file, not a folder")
    new = not out.is_dir()
    parent = out.parent if new else out
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))  # mode 700
    try:
        yield stage
        if new:
            stage.rename(out)
        else:
            for made in sorted(stage.iterdir()):
                made.replace(out / made.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_private(path: Path, what: str = "secret key file") -> None:
    """Refuse a secret file that another user can reach: group/other permission bits on the file, in a
    folder they can enter (x). A 600 file, or any file in a 700 folder, passes."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        folder = stat.S_IMODE(path.resolve().parent.stat().st_mode)
    except OSError:
        return  # missing or unreadable: the read that follows names it
    if mode & 0o077 and folder & 0o011:
        raise GhostboxError(f"security: {what} '{path}' has mode {mode:03o} in folder '{path.parent}' (mode "
                            f"{folder:03o}): other users can read or overwrite it; `chmod 600 {path}` (or `chmod 700 "
                            f"{path.parent}`), and make new keys if it may have been copied")


def load_token(keys_dir: str | Path) -> bytes:
    path = Path(keys_dir) / TOKEN_FILE
    check_private(path, "token file")
    try:
        token = path.read_text().strip().encode()
    except FileNotFoundError:
        raise GhostboxError(f"security: token file '{path}' not found (an insecure tcp graph needs it on every "
                            f"machine; make it with `ghostbox keys --out {path.parent} --token`)") from None
    except OSError as exc:
        raise GhostboxError(f"security: token file '{path}': {exc}") from None
    if len(token) < 16:
        raise GhostboxError(f"security: token file '{path}' holds fewer than 16 characters")
    return token


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise GhostboxError(f"security: key file '{path}' not found (make it with `ghostbox keys`)")
    if need_secret:
        check_private(path)
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except Exception as exc:  # malformed certificate files raise assorted errors
        raise GhostboxError(f"security: key file '{path}' is not a zmq certificate ({exc})") from exc
    if need_secret and not secret:
        raise GhostboxError(f"security: '{path}' holds no secret key")
    return public, secret


@dataclass
class Curve:
    """Key material of one stage process, loaded on first use so a stage needs only its side's files.

    With `roles`, every stage connects with its role's key pair (source, worker, broker, filter,
    sink) and each bound endpoint accepts only the role that belongs on it (`edge_roles`, from
    the graph): a machine holding a worker's key can reach the broker's workers endpoint and
    nothing else, so it can neither speak for a source nor write rows at a sink.
    """

    keys_dir: Path
    server_name: str
    client_name: str
    authorized: list[str]
    role: str | None = None  # this stage's role, when roles are on
    edge_roles: dict[str, str] | None = None  # edge (ZAP domain) -> the one role it accepts; None: `authorized`
    _server: tuple[bytes, bytes] | None = None
    _client: tuple[bytes, bytes, bytes] | None = None
    _auth: dict[int, ThreadAuthenticator] = field(default_factory=dict)
    _allowed: dict[str, set[bytes]] = field(default_factory=dict)

    def _path(self, name: str, suffix: str) -> Path:
        path = Path(name)
        return path if path.suffix in (".key", ".key_secret") else self.keys_dir / f"{name}{suffix}"

    @property
    def client_key_name(self) -> str:
        return self.role if self.edge_roles is not None and self.role else self.client_name

    def server_keys(self) -> tuple[bytes, bytes]:
        if self._server is None:
            public, secret = _load(self._path(self.server_name, ".key_secret"), need_secret=True)
            self._server = (public, secret or b"")
        return self._server

    def client_keys(self) -> tuple[bytes, bytes, bytes]:
        """(client public, client secret, server public)."""
        if self._client is None:
            public, secret = _load(self._path(self.client_key_name, ".key_secret"), need_secret=True)
            server_public, _ = _load(self._path(self.server_name, ".key"), need_secret=False)
            self._client = (public, secret or b"", server_public)
        return self._client

    def allowed_keys(self, edge: str = "") -> set[bytes]:
        """Client public keys a server socket on `edge` accepts."""
        if edge in self._allowed:
            return self._allowed[edge]
        if self.edge_roles is not None:
            if edge not in self.edge_roles:
                raise GhostboxError(f"security: no role is allowed on endpoint '{edge}'")
            keys = {_load(self._path(self.edge_roles[edge], ".key"), need_secret=False)[0]}
        else:
            keys = set()
            for name in self.authorized:
                path = self._path(name, ".key")
                if path.is_dir():
                    keys.update(zmq.auth.load_certificates(str(path)).keys())
                else:
                    keys.add(_load(path, need_secret=False)[0])
            if not keys:
                raise GhostboxError("security: `authorized` lists no client keys; no one could connect")
        self._allowed[edge] = keys
        return keys

    def make_server(self, ctx: zmq.Context, sock: zmq.Socket, edge: str = "") -> None:
        public, secret = self.server_keys()
        self._authenticator(ctx, edge)
        sock.zap_domain = (edge or "*").encode()
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    def make_client(self, sock: zmq.Socket) -> None:
        public, secret, server_public = self.client_keys()
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = server_public

    def _authenticator(self, ctx: zmq.Context, edge: str) -> None:
        # One ZAP handler per context answers for every CURVE server socket of the process, one allow-list per edge.
        auth = self._auth.get(id(ctx))
        if auth is None:
            auth = self._auth[id(ctx)] = ThreadAuthenticator(ctx, log=logging.getLogger("pipeline.stream.zap"))
            auth.start()
        allowed = self.allowed_keys(edge)

        class _AllowList:
            def callback(self, domain: str, key: bytes) -> bool:
                ok = key in allowed
                if not ok:
                    log.warning("CURVE: refused a client on %s whose public key %s... is not allowed there", domain,
                                key[:8].decode(errors="replace"))
                return ok

        auth.configure_curve_callback(domain=edge or "*", credentials_provider=_AllowList())

    def stop(self) -> None:
        for auth in self._auth.values():
            auth.stop()
        self._auth.clear()


@dataclass
class PeerAuth:
    """How this graph's tcp sockets authenticate peers: CURVE keys, the graph token, or nothing (ipc only)."""

    curve: Curve | None
    token_dir: Path | None
    _token: bytes | None = None
    _auth: dict[int, ThreadAuthenticator] = field(default_factory=dict)

    @classmethod
    def from_graph(cls, graph: object, role: str | None = None) -> PeerAuth:
        """`role`: the kind of stage this process runs (source, worker, broker, filter, sink)."""
        security = graph.security  # type: ignore[attr-defined]
        keys = Path(security.keys)
        curve = (Curve(keys, security.server, security.client, list(security.authorized), role=role,
                       edge_roles=graph.edge_roles() if security.roles else None)  # type: ignore[attr-defined]
                 if graph.curve_on() else None)  # type: ignore[attr-defined]
        return cls(curve, keys if graph.token_on() else None)  # type: ignore[attr-defined]

    @property
    def active(self) -> bool:
        return self.curve is not None or self.token_dir is not None

    def ensure_keys(self) -> None:
        """First run on this machine: make what is missing entirely (never half of an existing set)."""
        if self.curve is not None:
            curve = self.curve
            clients = sorted(set(curve.edge_roles.values())) if curve.edge_roles is not None else [curve.client_name]
            paths = [curve._path(name, ".key_secret") for name in [curve.server_name, *clients]]
            if not any(p.exists() or p.with_suffix(".key").exists() for p in paths):
                for name, path in zip([curve.server_name, *clients], paths):
                    make_keypair(path.parent, name)
                log.info("made CURVE key pairs %s in %s (first run; copy them to other machines as "
                         "docs/multi-host.md says)", ", ".join([curve.server_name, *clients]), paths[0].parent)
        if self.token_dir is not None and not (self.token_dir / TOKEN_FILE).exists():
            make_token(self.token_dir)
            log.info("made the graph token %s (first run)", self.token_dir / TOKEN_FILE)

    def check(self) -> None:
        """Every file this graph's stages will need, loaded now: one clear line if one is missing."""
        if self.curve is not None:
            self.curve.server_keys()
            for edge in (self.curve.edge_roles or {"": ""}):
                self.curve.allowed_keys(edge)
            if self.curve.edge_roles is not None:
                for role in set(self.curve.edge_roles.values()):
                    _load(self.curve._path(role, ".key_secret"), need_secret=True)
            else:
                self.curve.client_keys()
        if self.token_dir is not None:
            self.token()

    def token(self) -> bytes:
        if self._token is None:
            assert self.token_dir is not None
            self._token = load_token(self.token_dir)
        return self._token

    def configure(self, ctx: zmq.Context, sock: zmq.Socket, bind: bool, edge: str = "") -> None:
        """Before bind/connect of a tcp socket on `edge` (sources, workers, filter, sink:NAME)."""
        if self.curve is not None:
            if bind:
                self.curve.make_server(ctx, sock, edge)
            else:
                self.curve.make_client(sock)
        elif self.token_dir is not None:
            if bind:
                if id(ctx) not in self._auth:
                    auth = ThreadAuthenticator(ctx, log=logging.getLogger("pipeline.stream.zap"))
                    auth.start()
                    auth.configure_plain(domain="*", passwords={TOKEN_USER.decode(): self.token().decode()})
                    self._auth[id(ctx)] = auth
                sock.plain_server = True
            else:
                sock.plain_username = TOKEN_USER
                sock.plain_password = self.token()

    def stop(self) -> None:
        if self.curve is not None:
            self.curve.stop()
        for auth in self._auth.values():
            auth.stop()
        self._auth.clear()
