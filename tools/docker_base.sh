#!/usr/bin/env bash
# Make Docker usable on a Debian machine without a container registry, and the local Debian base image.
#   - installs Debian's docker.io (dockerd), debootstrap and docker-compose if missing (needs root and apt-get);
#   - starts dockerd if no daemon answers (these machines have no systemd); log: /var/log/dockerd.log;
#   - makes the base image once from Debian's own packages, since no base image can be pulled:
#       debootstrap --variant=minbase bookworm ROOTFS && tar -C ROOTFS -c . | docker import - IMAGE
#     An existing IMAGE is kept (delete it with `docker rmi IMAGE` to make it anew).
# Prints the image name on its last line. Then: docker build --build-arg BASE_IMAGE=IMAGE ... (docs/docker.md)
#   GHOSTBOX_BASE_IMAGE  image name (default ghostbox-base:bookworm)
#   DEBIAN_MIRROR        (default http://deb.debian.org/debian)
set -euo pipefail

image="${GHOSTBOX_BASE_IMAGE:-ghostbox-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Debian 12's versions when this was written; a point release replaces them, so the candidate is taken then.
pins=(docker.io=20.10.24+dfsg1-1+deb12u1+b6 debootstrap=1.0.128+nmu2+deb12u2 docker-compose=1.29.2-3)

say() { echo "docker_base: $*" >&2; }

# The Debian-packaged client first: a newer static `docker` client without buildx cannot use BuildKit.
docker_cli() {
    if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi
}

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
# compose.yaml and its test: Docker's compose plugin where there is one, else Debian's docker-compose
docker_cli compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${need[*]} and cannot install them (needs root and apt-get)"; exit 1
    fi
    want=()
    for pkg in "${need[@]}"; do
        for pin in "${pins[@]}"; do [ "${pin%%=*}" = "$pkg" ] && want+=("$pin"); done
    done
    apt-get update -qq
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null \
        || { say "pinned ${want[*]} not available; installing the candidates"
             apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

if ! docker_cli info >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        say "no Docker daemon answers and only root can start one here"; exit 1
    fi
    say "starting dockerd (log /var/log/dockerd.log)"
    # setsid: the daemon outlives this script and the shell that ran it
    setsid dockerd >>/var/log/dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 60); do
        docker_cli info >/dev/null 2>&1 && break
        sleep 1
    done
    docker_cli info >/dev/null 2>&1 || { say "dockerd did not come up: tail /var/log/dockerd.log"; exit 1; }
fi

if docker_cli image inspect "$image" >/dev/null 2>&1; then
    say "$image exists (kept)"
else
    rootfs="$(mktemp -d /var/tmp/ghostbox-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    say "debootstrap bookworm into $rootfs (a few minutes)"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
    # what a pulled Debian image has too: an empty apt cache, and the updates and security suites
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    printf 'deb %s %s main\n' "$mirror" bookworm "$mirror" bookworm-updates \
        "${mirror%/debian}/debian-security" bookworm-security > "$rootfs/etc/apt/sources.list"
    tar -C "$rootfs" -c . | docker_cli import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["bash"]' - "$image" >/dev/null
    say "made $image"
fi
echo "$image"
