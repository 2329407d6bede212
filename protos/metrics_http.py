"""The Prometheus endpoint of the control plane and of each agent: prometheus_client's HTTP server (a daemon thread)
serving one registry at /metrics on a port of its own. Port 0 takes a free one (`.port` tells which)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, host: str, port: int, setting: str):
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise SystemExit(f"cannot serve metrics on {host}:{port}: {exc} (set {setting}; 0 takes a free port)") \
                from None
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
