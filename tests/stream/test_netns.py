"""A graph spread over two hosts, for real: two network namespaces on this machine joined by a
veth pair, each stage started as `ip netns exec NS ghostbox stage NAME --config graph.yaml`,
tcp with CURVE between them.

    host A  gbxA<pid>  10.231.0.1   broker, filter, sink:out   (binds tcp :5550 sources, :5551 workers)
    host B  gbxB<pid>  10.231.0.2   worker:0, source:clip      (connects to A)

Every tcp endpoint is bound on A's veth address; the filter and sink edges stay on A and use
the default ipc sockets (binders: broker for the filter edge, the sink for its own). So A's
stages are all CURVE servers and B's all clients, and each host gets only the key files
docs/multi-host.md says it needs: A `server.key_secret` + `client.key`, B `client.key_secret`
+ `server.key`. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2; skips otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.stream_helpers import (
    assert_exactly_once_in_order,
    base_config,
    env,
    records,
    short_dir,
    tiny_filter,
    video,
    write_config,
)

pytestmark = pytest.mark.slow

FRAMES = 45
A_ADDR, B_ADDR = "10.231.0.1", "10.231.0.2"
SOURCES_URL, WORKERS_URL = f"tcp://{A_ADDR}:5550", f"tcp://{A_ADDR}:5551"


@dataclass
class Hosts:
    a: str  # namespace names
    b: str


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _kill_inside(namespace: str) -> list[str]:
    """Kill what is still running in `namespace` (only this test starts processes there); their pids.
    Not guard_leftovers: it would also kill stage processes of other tests running meanwhile."""
    pids = _ip("netns", "pids", namespace).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    return pids


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed: cannot make network namespaces")
    tag = os.getpid()  # unique per pytest process, so parallel runs do not clash
    ns = Hosts(f"gbxA{tag}", f"gbxB{tag}")
    veth_a, veth_b = f"gbxa{tag}", f"gbxb{tag}"  # interface names: 15 characters at most
    made: list[str] = []
    try:
        for name in (ns.a, ns.b):
            result = _ip("netns", "add", name)
            if result.returncode:
                pytest.skip(f"cannot make a network namespace (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")
            made.append(name)
        steps = [("link", "add", veth_a, "type", "veth", "peer", "name", veth_b),
                 ("link", "set", veth_a, "netns", ns.a), ("link", "set", veth_b, "netns", ns.b)]
        for namespace, dev, addr in ((ns.a, veth_a, A_ADDR), (ns.b, veth_b, B_ADDR)):
            steps += [("-n", namespace, "addr", "add", f"{addr}/24", "dev", dev),
                      ("-n", namespace, "link", "set", dev, "up"), ("-n", namespace, "link", "set", "lo", "up")]
        for step in steps:
            result = _ip(*step)
            if result.returncode:
                pytest.skip(f"cannot join the namespaces (`ip {' '.join(step)}`): {result.stderr.strip()}")
        probe = subprocess.run(["ip", "netns", "exec", ns.b, sys.executable, "-c", "pass"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode:
            pytest.skip(f"`ip netns exec` does not work here: {probe.stderr.strip()[-300:]}")
        yield ns
    finally:
        for name in made:
            _kill_inside(name)
            _ip("netns", "del", name)  # takes its end of the veth pair, and with it the peer
        if _ip("link", "show", veth_a).returncode == 0:  # made but never moved into a namespace
            _ip("link", "del", veth_a)


def _start(namespace: str, name: str, host_dir: Path, logs: Path) -> subprocess.Popen:
    # `ghostbox stage`, what users run on each machine. With --config it costs no more to start than
    # stage_main (both check the detector section, which imports torch).
    command = [sys.executable, "-m", "pipeline", "stage", name, "--config", "graph.yaml"]
    with open(logs / f"{name.replace(':', '_')}.log", "w") as log:  # the child keeps its own copy
        # cwd: the host's folder, so the config's relative `keys` is that host's own key folder
        return subprocess.Popen(["ip", "netns", "exec", namespace, *command], stdout=log,
                                stderr=subprocess.STDOUT, env=env(), cwd=host_dir)


# A source-shaped client on host B: which handshake event it gets, and whether anything came back.
_INTRUDER = r"""
import sys, time, msgpack, zmq, zmq.auth
from zmq.utils.monitor import recv_monitor_message
url, server_key, client_secret = sys.argv[1:4]
ctx = zmq.Context()
sock = ctx.socket(zmq.DEALER)
sock.linger = 0
if client_secret != "-":
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(client_secret)
    sock.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
monitor = sock.get_monitor_socket()
sock.connect(url)
sock.send_multipart([b"clip", msgpack.packb({"v": 1, "type": "hello", "role": "source"})])
outcome, deadline = "timeout", time.monotonic() + 30
while time.monotonic() < deadline and outcome == "timeout":
    if monitor.poll(200):
        event = recv_monitor_message(monitor)["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            outcome = "accepted"
        elif event in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
            outcome = "refused:" + zmq.Event(event).name
replies = 0
end = time.monotonic() + 1.5  # a refused peer must get nothing back, not even an error reply
while time.monotonic() < end:
    if sock.poll(100):
        sock.recv_multipart()
        replies += 1
print(outcome, replies)
ctx.destroy(linger=0)
"""


def _intruder(namespace: str, host_dir: Path, client_secret: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", _INTRUDER, SOURCES_URL,
                             "keys/server.key", client_secret], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env(), cwd=host_dir)


def _tails(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(logs.glob("*.log")))


def test_stages_on_two_hosts_over_tcp_with_curve(tmp_path: Path, hosts: Hosts) -> None:
    from pipeline.cli.main import main
    from pipeline.stream.security import make_keypair

    run_dir = short_dir()
    out, logs, made = tmp_path / "out", tmp_path / "logs", tmp_path / "keys"
    host_a, host_b = tmp_path / "hostA", tmp_path / "hostB"
    logs.mkdir()
    assert main(["keys", "--out", str(made), "server", "client"]) == 0
    # seal.key on both: A runs the filter and the sink, B the source
    for host, files in ((host_a, ["server.key_secret", "client.key", "seal.key"]),
                        (host_b, ["client.key_secret", "server.key", "seal.key"])):
        (host / "keys").mkdir(parents=True)
        for name in files:
            shutil.copy2(made / name, host / "keys" / name)  # keeps the secret's mode 600
    make_keypair(host_b / "rogue", "rogue")  # a valid key pair that A does not list

    config = base_config(out, [{"id": "clip", "uri": str(video(FRAMES)), "fps": 20}], run_dir,
                         filter={"path": str(tiny_filter())},
                         endpoints={"sources": {"url": SOURCES_URL}, "workers": {"url": WORKERS_URL}},
                         sinks=[{"name": "out", "out": str(out), "video": False}],
                         # explicit, so the test means the same whatever the tcp default is
                         security={"curve": True, "keys": "keys"})
    for host in (host_a, host_b):  # the same config on both hosts
        write_config(host / "graph.yaml", config)

    procs: dict[str, subprocess.Popen] = {}
    try:
        try:
            for name in ["sink:out", "filter", "broker"]:  # binders first
                procs[name] = _start(hosts.a, name, host_a, logs)
            procs["worker:0"] = _start(hosts.b, "worker:0", host_b, logs)
            # Before the source starts, so the broker is certainly still up: a wrong key and no key at all.
            checks = {"rogue": _intruder(hosts.b, host_b, "rogue/rogue.key_secret"),
                      "keyless": _intruder(hosts.b, host_b, "-")}
            intruders = {who: proc.communicate(timeout=60)[0].strip() for who, proc in checks.items()}
            procs["source:clip"] = _start(hosts.b, "source:clip", host_b, logs)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
                if any(p.poll() for p in procs.values()):  # a stage failed: the rest would wait for ever
                    break
                time.sleep(0.2)
        finally:
            hung = [name for name, proc in procs.items() if proc.poll() is None]
            for name in hung:
                procs[name].kill()
                procs[name].wait(10)
            leftovers = _kill_inside(hosts.a) + _kill_inside(hosts.b)
        failed = {name: proc.returncode for name, proc in procs.items() if name not in hung and proc.returncode}
        assert not failed, f"stages that failed (exit codes): {failed}"
        assert not hung, f"stages still running at the end (killed): {hung}"
        assert not leftovers, f"processes left in the namespaces: {leftovers}"
        assert intruders["rogue"] == "refused:HANDSHAKE_FAILED_AUTH 0", intruders
        assert intruders["keyless"] == "refused:HANDSHAKE_FAILED_PROTOCOL 0", intruders
        assert "refused" in (logs / "broker.log").read_text()  # and A's side noticed
        assert_exactly_once_in_order(records(out), {"clip": FRAMES})
        assert all("score" in b for r in records(out) for b in r["boxes"])  # the filter ran on A
    except Exception:
        print(_tails(logs))
        raise
