"""CurveZMQ for tcp endpoints: key pairs, and who may connect.

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
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from pipeline.errors import GhostboxError

log = logging.getLogger(__name__)


def make_keypair(out_dir: str | Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write OUT/NAME.key (public) and OUT/NAME.key_secret (secret, mode 600)."""
    out = Path(out_dir)
    public, secret = out / f"{name}.key", out / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise GhostboxError(f"keys: '{public}' already exists (pass --force to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    made_public, made_secret = zmq.auth.create_certificates(str(out), name)
    os.chmod(made_secret, 0o600)
    return Path(made_public), Path(made_secret)


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise GhostboxError(f"security: key file '{path}' not found (make it with `ghostbox keys`)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except Exception as exc:  # malformed certificate files raise assorted errors
        raise GhostboxError(f"security: key file '{path}' is not a zmq certificate ({exc})") from exc
    if need_secret and not secret:
        raise GhostboxError(f"security: '{path}' holds no secret key")
    return public, secret


@dataclass
class Curve:
    """Key material of one stage process, loaded on first use so a stage needs only its side's files."""

    keys_dir: Path
    server_name: str
    client_name: str
    authorized: list[str]
    _server: tuple[bytes, bytes] | None = None
    _client: tuple[bytes, bytes, bytes] | None = None
    _auth: dict[int, ThreadAuthenticator] = field(default_factory=dict)

    def _path(self, name: str, suffix: str) -> Path:
        path = Path(name)
        return path if path.suffix in (".key", ".key_secret") else self.keys_dir / f"{name}{suffix}"

    def server_keys(self) -> tuple[bytes, bytes]:
        if self._server is None:
            public, secret = _load(self._path(self.server_name, ".key_secret"), need_secret=True)
            self._server = (public, secret or b"")
        return self._server

    def client_keys(self) -> tuple[bytes, bytes, bytes]:
        """(client public, client secret, server public)."""
        if self._client is None:
            public, secret = _load(self._path(self.client_name, ".key_secret"), need_secret=True)
            server_public, _ = _load(self._path(self.server_name, ".key"), need_secret=False)
            self._client = (public, secret or b"", server_public)
        return self._client

    def allowed_keys(self) -> set[bytes]:
        keys = set()
        for name in self.authorized:
            path = self._path(name, ".key")
            if path.is_dir():
                keys.update(zmq.auth.load_certificates(str(path)).keys())
            else:
                keys.add(_load(path, need_secret=False)[0])
        if not keys:
            raise GhostboxError("security: `authorized` lists no client keys; no one could connect")
        return keys

    def make_server(self, ctx: zmq.Context, sock: zmq.Socket) -> None:
        public, secret = self.server_keys()
        self._authenticator(ctx)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    def make_client(self, sock: zmq.Socket) -> None:
        public, secret, server_public = self.client_keys()
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = server_public

    def _authenticator(self, ctx: zmq.Context) -> None:
        # One ZAP handler per context: it answers for every CURVE server socket of the process.
        if id(ctx) in self._auth:
            return
        allowed = self.allowed_keys()

        class _AllowList:
            def callback(self, domain: str, key: bytes) -> bool:  # noqa: ARG002 - pyzmq's signature
                ok = key in allowed
                if not ok:
                    log.warning("CURVE: refused a client with an unauthorized public key %s...", key[:8].decode(errors="replace"))
                return ok

        auth = ThreadAuthenticator(ctx, log=logging.getLogger("pipeline.stream.zap"))
        auth.start()
        auth.configure_curve_callback(domain="*", credentials_provider=_AllowList())
        self._auth[id(ctx)] = auth

    def stop(self) -> None:
        for auth in self._auth.values():
            auth.stop()
        self._auth.clear()
