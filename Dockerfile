# The Python services (control plane, GPU agent, gateway), the trainers and the `bugagaric` CLI, in one image;
# compose.yaml picks the command. On a GPU host PyPI's torch build brings CUDA.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY control_plane control_plane
COPY gpu_agent gpu_agent
COPY trainers trainers
COPY gateway gateway
COPY cli cli
# EXTRAS=gpu adds bitsandbytes (QLoRA) and liger-kernel on a GPU host's image: `docker compose build --build-arg EXTRAS=gpu`;
# EXTRAS=gpu,tracking adds tensorboard and mlflow for `report_to`.
ARG EXTRAS=""
RUN pip install --no-cache-dir "torch==2.13.0" ".${EXTRAS:+[$EXTRAS]}"
# The services never need root: they run as an unprivileged user that owns only its workspace (the volumes mounted
# there take this ownership when first created).
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/bugagaric bugagaric \
    && mkdir -p /workspace/models \
    && chown -R bugagaric:bugagaric /workspace
USER 10001:10001
ENV BUGAGARIC_WORKSPACE=/workspace HOME=/home/bugagaric
WORKDIR /workspace
