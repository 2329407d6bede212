"""Gateway settings, read from the environment (prefix BUGAGARIC_, like every other service)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUGAGARIC_", extra="ignore")

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=18080, ge=1, le=65535)
    control_plane_address: str = "127.0.0.1:50051"
    # Per unary call; a hung control plane turns into a 504 rather than a hung HTTP request.
    grpc_timeout_seconds: float = Field(default=10.0, gt=0)
    # Largest request body a route takes unless it opts into more (gateway.body_limit.max_body_bytes); over it: 413.
    gateway_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # The largest dataset upload (the control plane enforces the same setting on the file's bytes); the upload route
    # takes a body this large plus the multipart framing, and refuses a larger one with 413 before any call.
    max_dataset_bytes: int = Field(default=2 * 1024**3, gt=0)
    # Peers whose X-Forwarded-For names the end client (uvicorn's forwarded_allow_ips: comma-separated addresses or
    # networks, "*" for any). The default is the console's proxy on the same host.
    gateway_trusted_proxies: str = "127.0.0.1,::1"
    # The OpenAI-compatible API (/v1, gateway/openai_api) on a port of its own, same host as the gateway; 0 or empty:
    # not served.
    openai_port: int = Field(default=18081, ge=0, le=65535)

    @field_validator("openai_port", mode="before")
    @classmethod
    def _empty_port_is_off(cls, value: object) -> object:
        return 0 if isinstance(value, str) and not value.strip() else value
    # TLS for its channel to the control plane (protos.tls; README "TLS"): the CA that signed the control plane's
    # certificate, and a certificate of its own where the control plane requires client certificates. Unset: plaintext.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_server_name: str = ""
