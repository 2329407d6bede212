"""REST <-> gRPC gateway: translates DESIGN.md's REST routes to FinetuneService calls. Holds no state."""

from gateway.app import create_app

__all__ = ["create_app"]
