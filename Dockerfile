# CPU image (default):
#   docker build -t ghostbox .
# CUDA image:
#   docker build -t ghostbox:gpu --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg EXTRAS=gpu .
#   docker run --gpus all -v $PWD/data:/data ghostbox:gpu detect /data/video.mp4 --out /data/out
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG EXTRAS=cpu
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    GHOSTBOX_HOME=/var/cache/ghostbox \
    PYTHONUNBUFFERED=1

# CUDA base images come without Python; OpenCV needs libGL-free headless libs only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip libglib2.0-0 ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ghostbox
COPY pyproject.toml requirements.lock README.md ./
COPY tools/setup.sh tools/setup.sh
COPY pipeline pipeline
COPY configs configs
RUN PYTHON=python3 GHOSTBOX_EXTRAS=${EXTRAS} bash tools/setup.sh
ENV PATH=/opt/ghostbox/.venv/bin:$PATH

# Streams and metrics: ghostbox binds to loopback unless a config says otherwise.
EXPOSE 9464
ENTRYPOINT ["ghostbox"]
CMD ["--help"]
