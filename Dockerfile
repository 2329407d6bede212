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
RUN pip install --no-cache-dir "torch==2.13.0" .
ENV BUGAGARIC_WORKSPACE=/workspace
WORKDIR /workspace
