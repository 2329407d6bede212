"""host:port addresses as the services advertise them (agents, the rendezvous of a multi-node task)."""

from __future__ import annotations


def host_of(address: str) -> str:
    """The host part of host:port or [v6]:port (the whole string when it has no port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address.strip("[]")
    return host.strip("[]")


def joined(host: str, port: int) -> str:
    """host:port, bracketing an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
