"""`ghostbox keys` and the secret files it writes (issue 25, items 5 and 6): secrets other users can
read are refused with the chmod that fixes them; a key set is written whole or not at all."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.errors import GhostboxError
from pipeline.stream.security import ROLES, TOKEN_FILE, Curve, check_private, load_token, make_keypair
from tests.helpers.stream_helpers import REPO, env


def _curve(keys: Path) -> Curve:
    return Curve(keys, "server", "client", ["client"])


def test_secret_key_readable_by_others_is_refused_with_the_chmod(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    make_keypair(keys, "server")
    make_keypair(keys, "client")
    keys.chmod(0o755)
    secret = keys / "server.key_secret"
    secret.chmod(0o644)
    with pytest.raises(GhostboxError, match=rf"'{secret}' has mode 644 .* `chmod 600 {secret}` .*`chmod 700 {keys}`"):
        _curve(keys).server_keys()
    (keys / "client.key_secret").chmod(0o640)  # group-readable is as bad
    with pytest.raises(GhostboxError, match="chmod 600 .*client.key_secret"):
        _curve(keys).client_keys()
    secret.chmod(0o600)
    (keys / "client.key_secret").chmod(0o600)
    assert _curve(keys).server_keys() and _curve(keys).client_keys()
    secret.chmod(0o644)
    keys.chmod(0o700)  # other users cannot enter the folder: the file's own bits do not matter
    assert _curve(keys).server_keys()


def test_token_readable_by_others_is_refused(tmp_path: Path) -> None:
    (tmp_path / TOKEN_FILE).write_text("x" * 32 + "\n")
    (tmp_path / TOKEN_FILE).chmod(0o644)
    tmp_path.chmod(0o755)
    with pytest.raises(GhostboxError, match=f"token file .*chmod 600 {tmp_path / TOKEN_FILE}"):
        load_token(tmp_path)
    (tmp_path / TOKEN_FILE).chmod(0o600)
    assert load_token(tmp_path) == b"x" * 32


def test_keys_writes_secrets_that_pass_the_check(tmp_path: Path) -> None:
    new, shared = tmp_path / "new", tmp_path / "shared"
    shared.mkdir(mode=0o755)  # an existing folder others can enter
    shared.chmod(0o755)
    for out in (new, shared):
        assert main(["keys", "--out", str(out), "--roles", "--token"]) == 0
        secrets = sorted(out.glob("*.key_secret"))
        assert len(secrets) == len({"server", *ROLES})
        for path in [*secrets, out / TOKEN_FILE]:
            assert path.stat().st_mode & 0o077 == 0
            check_private(path)
    assert new.stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    assert [p.name for p in shared.iterdir() if ".tmp-" in p.name] == []


def test_keys_refuses_before_making_any_when_one_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_keypair(tmp_path, "client")
    assert main(["keys", "--out", str(tmp_path), "server", "client"]) == 2
    assert "client.key' already exists (pass --force" in capsys.readouterr().err
    assert not (tmp_path / "server.key").exists()  # the set is all or nothing: server was not made first


@pytest.mark.parametrize("reader", ["head -n 0", "head -1"])
def test_keys_into_a_pipe_closed_early_leave_no_partial_set(tmp_path: Path, reader: str) -> None:
    """`ghostbox keys ... | head`: either every key is listed and written (exit 0), or the broken pipe is
    an error and no key file is left (a rerun then does not meet 'already exists')."""
    out = tmp_path / "keys"
    command = (f"set -o pipefail; {shlex.quote(sys.executable)} -m pipeline keys --out {shlex.quote(str(out))} "
               f"--roles --token | {reader}")
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env(), cwd=REPO, timeout=120)
    assert [p.name for p in tmp_path.iterdir() if p.name != "keys"] == []  # no temporary folder left
    if reader == "head -n 0":  # head exits before reading: the list cannot be written
        assert proc.returncode != 0
    if proc.returncode == 0:
        assert len(list(out.glob("*.key_secret"))) == len({"server", *ROLES}) and (out / TOKEN_FILE).is_file()
    else:
        assert not out.exists(), sorted(p.name for p in out.iterdir())
        assert "broken pipe" in proc.stderr and "Traceback" not in proc.stderr
