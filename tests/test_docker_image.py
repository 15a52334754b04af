"""The Docker image: built from the repo's Dockerfile, `demo` in a container against the same demo on the host,
`run` on a mounted video, and compose.yaml's graph with two worker containers, exactly once; the entrypoint
running commands as the owner of /data, and the README's quick start as root and as uid 1001.

Needs a Docker daemon and a client that builds with BuildKit; with no registry, the local Debian base image
that `tools/docker_base.sh` makes (as root; .ci/run runs it). Skips with the reason where either is missing.
GHOSTBOX_DOCKER_BASE names another base (e.g. python:3.11-slim-bookworm, online) and GHOSTBOX_DOCKER_TORCH_INDEX
the Dockerfile's TORCH_INDEX for it. The image is tagged by a hash of its inputs and reused while they are
unchanged; a changed input rebuilds only what changed (the dependencies' layer and pip's cache are kept).
Time on 2 cores: 4.5 minutes cold (3.3 of them the build: torch and the rest downloaded and installed),
1.5 minutes with the image built (the containers' runs and the host demo).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
LOCAL_BASE = "ghostbox-base:bookworm"  # tools/docker_base.sh
IMAGE_USER = (1000, 1000)  # the Dockerfile's user, who owns the image's /data
OTHER_USER = (1001, 1001)  # a host user who is not the image's
FRAMES = 120
COUNTS = re.compile(r"caught (\d+) of (\d+) hallucinations.*wrongly flagged (\d+) of (\d+) ID detections")
CA_FILES = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
BUILD_FREE_BYTES = 25 << 30  # a cold build took about 20 GB of Docker's storage here


def _run(*command: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _docker_client() -> tuple[list[str] | None, str]:
    """A docker client that builds with BuildKit and reaches a daemon, or None and why not."""
    candidates = [c for c in (os.environ.get("GHOSTBOX_DOCKER"), "/usr/bin/docker", shutil.which("docker")) if c]
    why = "no docker client (as root: bash tools/docker_base.sh installs Debian's docker.io)"
    for client in dict.fromkeys(candidates):
        info = _run(client, "version", "--format", "{{.Client.Version}} {{.Server.Version}}")
        if info is None:
            continue
        if info.returncode != 0:
            why = "no Docker daemon answers (as root: bash tools/docker_base.sh starts dockerd)"
            continue
        major = re.match(r"\d+", info.stdout)
        # a client before 23 builds with BuildKit itself; a later one only through its buildx plugin
        if (not major or int(major.group()) >= 23) and getattr(_run(client, "buildx", "version"), "returncode", 1):
            why = f"{client} {info.stdout.split()[0]} has no buildx plugin, so it cannot build with BuildKit"
            continue
        return [client], ""
    return None, why


DOCKER, WHY_NOT = _docker_client()
if DOCKER is None:
    pytest.skip(WHY_NOT, allow_module_level=True)
assert DOCKER is not None


def docker(*args: str, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run([*DOCKER, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        pytest.fail(f"docker {' '.join(args[:3])} ... exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                    f"{result.stderr[-5000:]}")
    return result


def docker_run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`docker run --rm ARGS`; a container still running at the timeout is removed, not left behind."""
    name = f"ghostbox-test-{uuid.uuid4().hex[:8]}"
    try:
        return docker("run", "--rm", "--name", name, *args, timeout=timeout)
    except subprocess.TimeoutExpired:
        docker("rm", "-f", name, check=False)
        raise


def _exists(image: str) -> bool:
    return docker("image", "inspect", image, check=False, timeout=60).returncode == 0


def _build_args() -> tuple[dict[str, str], str]:
    """The Dockerfile's build args for this machine, or why it cannot build here."""
    base = os.environ.get("GHOSTBOX_DOCKER_BASE")
    if base:
        index = os.environ.get("GHOSTBOX_DOCKER_TORCH_INDEX")
        return {"BASE_IMAGE": base, **({"TORCH_INDEX": index} if index else {})}, ""
    if _exists(LOCAL_BASE):
        # Debian's and PyPI's packages only: PyTorch's CPU index is not reachable
        return {"BASE_IMAGE": LOCAL_BASE, "TORCH_INDEX": os.environ.get("GHOSTBOX_DOCKER_TORCH_INDEX", "pypi")}, ""
    return {}, (f"no base image {LOCAL_BASE} (as root: bash tools/docker_base.sh makes it from Debian's "
                "packages); GHOSTBOX_DOCKER_BASE=python:3.11-slim-bookworm builds from the public image")


def _context_files() -> list[Path]:
    """What .dockerignore lets into the build context: the Dockerfile's inputs."""
    files = [REPO / name for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "requirements.lock")]
    for folder in ("pipeline", "configs"):
        files += [p for p in (REPO / folder).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return sorted(files)


def _ca_file() -> str | None:
    """The CA bundle pip is told to trust here (a TLS-inspecting proxy): the build's pip needs it too."""
    for name in CA_FILES:
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return os.environ[name]
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return str(default) if default.is_file() else None


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


def build_image() -> str:
    """The image of this tree, built once and reused while its inputs are unchanged (tests/test_swarm.py too);
    skips where it cannot be built."""
    args, why = _build_args()
    if why:
        pytest.skip(why)
    digest = hashlib.sha256()
    for path in _context_files():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    digest.update(json.dumps(args, sort_keys=True).encode())
    tag = f"ghostbox:test-{digest.hexdigest()[:16]}"
    if _exists(tag):
        return tag
    root = docker("info", "--format", "{{.DockerRootDir}}").stdout.strip() or "/var/lib/docker"
    free = shutil.disk_usage(root if Path(root).exists() else "/").free
    if free < BUILD_FREE_BYTES:
        # a machine that cannot hold the build is not a failure of the image
        pytest.skip(f"{free / 2**30:.0f} GiB free under {root}; building the image needs about "
                    f"{BUILD_FREE_BYTES / 2**30:.0f} GiB (torch's wheels, their layers and pip's cache)")
    command = ["build", "-t", tag, *[f"--build-arg={k}={v}" for k, v in args.items()]]
    if ca := _ca_file():
        command.append(f"--secret=id=pip_cert,src={ca}")
    docker(*command, str(REPO), timeout=2400, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    # older test images go, and build cache unused for 3 days (a former lock's venv is about 13 GB of it)
    for old in docker("images", "--format", "{{.Repository}}:{{.Tag}}", "ghostbox").stdout.split():
        if old.startswith("ghostbox:test-") and old != tag:
            docker("rmi", old, check=False)
    docker("builder", "prune", "-f", "--filter", "until=72h", check=False)
    return tag


def _owned_folder(path: Path) -> list[str]:
    """A folder the image's non-root user can write, and the `docker run` flags for it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, *IMAGE_USER)  # the image's own user, as a deployment would run it
        return []
    return ["--user", f"{os.getuid()}:{os.getgid()}"]


def _counts(stdout: str) -> tuple[int, ...]:
    found = COUNTS.search(stdout)
    assert found, f"no counts line in the demo's output:\n{stdout[-2000:]}"
    return tuple(int(g) for g in found.groups())


def _frames_once(out: Path, expected: int) -> dict:
    """detections.jsonl holds each frame once, in order, and summary.json says complete; returns the summary."""
    rows = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    frames = [row["frame"] for row in rows]
    assert frames == list(range(expected)), f"frames not each once in order: {len(frames)} rows, {frames[:20]}..."
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete", summary.get("problems")
    assert summary["frames"] == expected
    return summary


def _write_video(path: Path, frames: int, seed: int) -> None:
    import cv2

    from pipeline.sources.synth_reader import parse_synth_uri
    from pipeline.synth import WorldConfig, render_stream_frame

    world = WorldConfig(**parse_synth_uri(f"synth:seed={seed},frames={frames}"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(world.stream_fps),
                             (world.width, world.height))
    for index in range(frames):
        writer.write(render_stream_frame(world, index)[0])
    writer.release()
    path.chmod(0o644)


def _ids(image: str, *flags: str) -> str:
    """`id -u`:`id -g` of a command run by the image's entrypoint (as-data-owner) with these flags."""
    out = docker_run(*flags, "--entrypoint", "as-data-owner", image, "sh", "-c", 'echo "$(id -u):$(id -g)"')
    return out.stdout.strip()


def test_image_runs_as_the_owner_of_data(image: str, tmp_path: Path) -> None:
    """Nothing mounted: the image's uid 1000, never root. A mounted /data: its owner, so that the README's
    `docker run -v "$PWD/data:/data" ghostbox demo` writes for whoever typed it. --user: that user."""
    assert _ids(image) == "1000:1000"
    assert _ids(image, "--user", "1234:1234") == "1234:1234"
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert "/var/cache/ghostbox" in (config.get("Volumes") or {}), "GHOSTBOX_HOME is not a volume"
    assert config["Healthcheck"]["Test"][-3:] == ["-P", "-m", "pipeline.stream.health"], config["Healthcheck"]
    if os.geteuid() != 0:
        return  # the folders below need chown
    for uid, gid in (OTHER_USER, (0, 0)):
        data = tmp_path / f"data-{uid}"
        data.mkdir()
        os.chown(data, uid, gid)
        assert _ids(image, "-v", f"{data}:/data") == f"{uid}:{gid}"


@pytest.mark.parametrize("uid", [0, OTHER_USER[0]], ids=["root", "uid-1001"])
def test_readme_quick_start_as_any_user(image: str, tmp_path: Path, uid: int) -> None:
    """README: `mkdir -p data && docker run --rm -v "$PWD/data:/data" ghostbox demo`, as root and as a user
    who is not uid 1000 (the folder theirs), exits 0 and leaves outputs that user owns."""
    if os.geteuid() != 0:
        pytest.skip("making a folder of uid 1001 needs root")
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, uid, uid)
    docker_run("-v", f"{data}:/data", image, "demo", "--frames", "60", "--no-video")
    _frames_once(data / "runs" / "demo", 60)
    assert (data / "runs" / "demo" / "summary.json").stat().st_uid == uid


def test_demo_in_container_matches_host(image: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    user = _owned_folder(data)
    inside = docker_run(*user, "-v", f"{data}:/data", image, "demo", "--frames", str(FRAMES))
    out = data / "runs" / "demo"
    summary = _frames_once(out, FRAMES)
    assert (out / "annotated" / "street.mp4").stat().st_size > 0
    assert (out / "flagged" / "index.jsonl").exists()
    if not user:
        assert (out / "summary.json").stat().st_uid == IMAGE_USER[0]

    host = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--frames", str(FRAMES),
                           "--out", str(tmp_path / "host")], capture_output=True, text=True, timeout=600)
    assert host.returncode == 0, host.stderr[-3000:]
    assert _counts(inside.stdout) == _counts(host.stdout), (inside.stdout, host.stdout)
    assert summary["demo"] == json.loads((tmp_path / "host" / "summary.json").read_text())["demo"]


def test_run_on_mounted_video(image: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    user = _owned_folder(data)
    _write_video(data / "video.mp4", 60, seed=1)
    docker_run(*user, "-v", f"{data}:/data", image, "run", "--source", "/data/video.mp4", "--out", "/data/out",
               "--no-video")
    summary = _frames_once(data / "out", 60)
    assert summary["per_source"]["video"]["duplicates"] == 0


def _compose() -> list[str] | None:
    if DOCKER and subprocess.run([*DOCKER, "compose", "version"], capture_output=True).returncode == 0:
        return [*DOCKER, "compose"]
    return [path] if (path := shutil.which("docker-compose")) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_compose_graph_with_two_workers_exactly_once(image: str, tmp_path: Path) -> None:
    compose = _compose()
    if compose is None:
        pytest.skip("no docker compose plugin nor docker-compose (as root: bash tools/docker_base.sh installs it)")
    shutil.copy(REPO / "compose.yaml", tmp_path / "compose.yaml")
    keys, data = tmp_path / "keys", tmp_path / "data"
    user = _owned_folder(keys)
    _owned_folder(data)
    docker_run(*user, "-v", f"{keys}:/data", image, "keys", "--out", "/data", "server", "client")
    _write_video(data / "video.mp4", FRAMES, seed=2)
    project = f"gbxtest{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "GHOSTBOX_IMAGE": image, "GHOSTBOX_PORT": str(_free_port())}
    if user:
        env["GHOSTBOX_USER"] = user[1]
    run = [*compose, "-p", project, "-f", str(tmp_path / "compose.yaml")]
    try:
        up = subprocess.run([*run, "up", "--scale", "worker=2", "--no-color"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
        ids = docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
        states = [json.loads(docker("inspect", "--format", "{{json .}}", cid).stdout) for cid in ids]
        logs = up.stdout[-4000:] + up.stderr[-4000:]
        assert up.returncode == 0, logs
        services = sorted(s["Config"]["Labels"]["com.docker.compose.service"] for s in states)
        assert services == ["graph", "worker", "worker"], services
        assert all(s["State"]["ExitCode"] == 0 for s in states), logs
    finally:
        subprocess.run([*run, "down", "-v"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    summary = _frames_once(data / "out", FRAMES)
    assert summary["per_source"]["video"]["duplicates"] == 0
    # a worker runs its batches one after another: batches that overlap in time came from both workers
    rows = [json.loads(line) for line in (data / "out" / "detections.jsonl").read_text().splitlines()]
    batches = sorted({(row["t"]["detect_start"], row["t"]["detect_end"]) for row in rows})
    overlapping = [(a, b) for a, b in zip(batches, batches[1:]) if b[0] < a[1]]
    assert overlapping, "no two batches overlap in time: one worker did all the work"
