# ghostbox image: entrypoint `ghostbox`, run as the owner of /data (uid 1000 when nothing is mounted there),
# working folder /data (mount videos and outputs there).
# Needs BuildKit (the default since Docker 23; DOCKER_BUILDKIT=1 on 20.10). More in docs/docker.md.
#
# Online, CPU (PyTorch's CPU wheels):
#   docker build -t ghostbox .
# Only PyPI and Debian reachable (no registry, a TLS-inspecting proxy): a local Debian base, PyPI's torch,
# and the machine's CA bundle as a build secret (it stays out of every layer):
#   bash tools/docker_base.sh
#   docker build -t ghostbox --build-arg BASE_IMAGE=ghostbox-base:bookworm --build-arg TORCH_INDEX=pypi \
#                --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt .
# CUDA image (PyPI's torch is the CUDA build):
#   docker build -t ghostbox:gpu --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=pypi --build-arg EXTRAS=gpu .
#   docker run --gpus all -v "$PWD/data:/data" ghostbox:gpu detect /data/video.mp4 --out /data/out
#
#   mkdir -p data && docker run --rm -v "$PWD/data:/data" ghostbox demo     # -> data/runs/demo/, owned by you
ARG BASE_IMAGE=python:3.11-slim-bookworm

# What both stages share: the interpreter the venv is made with is the one that runs it.
FROM ${BASE_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive
# Debian's python3 where the base has none (local Debian base, CUDA images); tini as PID 1 forwards
# signals to ghostbox (and to the stages of a compose service) and reaps them.
RUN pkgs="tini"; command -v python3 >/dev/null || pkgs="$pkgs python3"; \
    apt-get update && apt-get install -y --no-install-recommends $pkgs \
    && rm -rf /var/lib/apt/lists/*

# What the install depends on, read off pyproject.toml: an edit elsewhere in it (a lint rule, a test marker)
# leaves the dependencies' layer as it was.
FROM base AS requirements
ARG EXTRAS=cpu
COPY pyproject.toml requirements.lock /src/
RUN mkdir /req && python3 -c "import sys, tomllib; \
project = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = [e for e in sys.argv[1].split(',') if e]; \
wanted = project['dependencies'] + [r for e in extras for r in project['optional-dependencies'][e]]; \
open('/req/requirements.txt', 'w').write(chr(10).join(wanted) + chr(10))" "$EXTRAS" \
    && grep -E '^(torch|torchvision)==' /src/requirements.lock > /req/torch.txt \
    && case ",$EXTRAS," in \
         *,gpu,*) grep -v '^onnxruntime==' /src/requirements.lock > /req/constraints.txt ;; \
         *) cp /src/requirements.lock /req/constraints.txt ;; \
       esac

FROM base AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# venv and ensurepip come apart in Debian's python3; only the build needs them.
RUN python3 -m venv /tmp/probe 2>/dev/null || { apt-get update \
    && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*; }; rm -rf /tmp/probe
COPY --from=requirements /req /req
# torch first and alone, pinned (as tools/setup.sh does), then the rest, pinned by the lock. From an index
# (TORCH_INDEX), torch and torchvision come from it alone (torch==X takes its X+cpu), so that an unreachable
# index fails the build instead of falling back to PyPI's CUDA build; their dependencies come with the rest.
# Cache mount: a rebuild after a lock change downloads only what changed.
RUN --mount=type=cache,id=ghostbox-pip,target=/root/.cache/pip \
    --mount=type=secret,id=pip_cert \
    set -eu; export PIP_PROGRESS_BAR=off PIP_DISABLE_PIP_VERSION_CHECK=1; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    python3 -m venv /opt/ghostbox/.venv; \
    pip="/opt/ghostbox/.venv/bin/python -m pip install -c /req/constraints.txt"; \
    if [ "$TORCH_INDEX" = pypi ]; then $pip -r /req/torch.txt; \
    else $pip --no-deps --index-url "$TORCH_INDEX" -r /req/torch.txt; fi; \
    $pip -r /req/requirements.txt

FROM base
# The cache folder is writable like /tmp, so that any --user may run the image.
RUN groupadd --gid 1000 ghostbox && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /data ghostbox \
    && mkdir -p /var/cache/ghostbox /data && chown 1000:1000 /var/cache/ghostbox /data \
    && chmod 1777 /var/cache/ghostbox
COPY --from=build /opt/ghostbox/.venv /opt/ghostbox/.venv
WORKDIR /opt/ghostbox
COPY pyproject.toml requirements.lock ./
# ghostbox itself, editable: a finder that maps `pipeline` to /opt/ghostbox/pipeline, and the `ghostbox`
# script; a small layer of its own, and no network (the venv's setuptools builds it).
RUN mkdir pipeline && touch pipeline/__init__.py README.md \
    && .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . \
    && rm -rf pipeline README.md ghostbox.egg-info /root/.cache
# as-data-owner COMMAND...: started as root, it runs COMMAND as the owner of /data, so that
# `docker run -v "$PWD/data:/data" ghostbox demo` works as typed for whoever types it (uid 1000, 1001, root)
# and leaves outputs that user owns. setpriv (util-linux, in every Debian) drops to that uid and gid with no
# supplementary groups; a root-owned /data (root made it) keeps root. Nothing mounted: the image's /data,
# uid 1000. Started as another user already (`--user`, compose's GHOSTBOX_USER, a stack's `user:`, a pod's
# runAsUser): COMMAND runs as that user, unchanged.
RUN printf '%s\n' '#!/bin/sh' 'set -e' \
      'if [ "$(id -u)" = 0 ]; then' \
      '  owner="$(stat -c %u:%g /data 2>/dev/null || echo 1000:1000)"' \
      '  [ "${owner%%:*}" = 0 ] || exec setpriv --reuid="${owner%%:*}" --regid="${owner#*:}" --clear-groups -- "$@"' \
      'fi' 'exec "$@"' > /usr/local/bin/as-data-owner \
    && chmod 755 /usr/local/bin/as-data-owner
COPY configs configs
COPY pipeline pipeline
# HOME: one folder every user can write (a dropped-to uid has none of its own; root's is closed to it)
ENV PATH=/opt/ghostbox/.venv/bin:$PATH \
    GHOSTBOX_HOME=/var/cache/ghostbox \
    HOME=/var/cache/ghostbox \
    MPLCONFIGDIR=/var/cache/ghostbox/matplotlib \
    PYTHONUNBUFFERED=1
# Ultralytics' settings, fonts, weights: kept apart from the image and across containers.
VOLUME /var/cache/ghostbox
WORKDIR /data
# Streams and metrics: ghostbox binds to loopback unless a config says otherwise.
EXPOSE 9464
# Healthy while every streaming stage in the container still turns its loop (its progress file is fresh;
# pipeline/stream/health.py); a container with no stage (demo's end, detect) has nothing to judge and passes.
# -P: /data, the working folder, stays off the import path. A Swarm task joins its service's DNS name only
# once healthy, so the interval is also how long workers wait to find the graph.
HEALTHCHECK --interval=5s --timeout=10s --start-period=60s --retries=6 \
    CMD ["python", "-P", "-m", "pipeline.stream.health"]
ENTRYPOINT ["tini", "--", "as-data-owner", "ghostbox"]
CMD ["--help"]
