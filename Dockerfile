# ghostbox image: entrypoint `ghostbox`, user 1000:1000, working folder /data (mount videos and outputs there).
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
#   docker run --rm -v "$PWD/data:/data" ghostbox demo     # -> data/runs/demo/ (data/ writable by uid 1000)
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
COPY configs configs
COPY pipeline pipeline
ENV PATH=/opt/ghostbox/.venv/bin:$PATH \
    GHOSTBOX_HOME=/var/cache/ghostbox \
    MPLCONFIGDIR=/var/cache/ghostbox/matplotlib \
    PYTHONUNBUFFERED=1
# Ultralytics' settings, fonts, weights: kept apart from the image and across containers.
VOLUME /var/cache/ghostbox
WORKDIR /data
USER 1000:1000
# Streams and metrics: ghostbox binds to loopback unless a config says otherwise.
EXPOSE 9464
ENTRYPOINT ["tini", "--", "ghostbox"]
CMD ["--help"]
