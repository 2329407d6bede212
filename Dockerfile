# The Python services (control plane, GPU agent, gateway) and the trainers, in one image; compose.yaml picks the
# command. On a GPU host PyPI's torch build brings CUDA.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY control_plane control_plane
COPY gpu_agent gpu_agent
COPY trainers trainers
COPY gateway gateway
# EXTRAS=gpu adds bitsandbytes (QLoRA) and liger-kernel on a GPU host's image: `docker compose build --build-arg EXTRAS=gpu`.
ARG EXTRAS=""
RUN pip install --no-cache-dir "torch==2.13.0" ".${EXTRAS:+[$EXTRAS]}"
ENV BUGAGARIC_WORKSPACE=/workspace
WORKDIR /workspace
