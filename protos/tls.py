"""TLS for every gRPC server and channel of the platform, from the `BUGAGARIC_TLS_*` settings.

Each process reads them once (its settings class has the `tls_*` fields; `Tls.from_settings`) and uses the one `Tls`
for the server it binds and every channel it opens:

- `BUGAGARIC_TLS_CERT_FILE`, `BUGAGARIC_TLS_KEY_FILE`: this process's certificate (PEM, chain allowed) and private
  key: its server certificate, and the client certificate it presents when it dials (mutual TLS).
- `BUGAGARIC_TLS_CA_FILE`: the CA that signs the servers it dials (unset: the system's roots), and, with client auth
  on, the clients it accepts.
- `BUGAGARIC_TLS_CLIENT_AUTH=1`: its server refuses clients without a certificate signed by that CA.
- `BUGAGARIC_TLS_SERVER_NAME`: the name checked in the servers' certificates instead of the dialed host (for
  addresses that are IPs without an IP SAN).

TLS is on when a certificate or a CA is given; nothing set: plaintext (a warning when a server binds a non-loopback
address that way). Half a configuration is refused at start, naming the variable and the file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import grpc

log = logging.getLogger(__name__)

CERT_ENV = "BUGAGARIC_TLS_CERT_FILE"
KEY_ENV = "BUGAGARIC_TLS_KEY_FILE"
CA_ENV = "BUGAGARIC_TLS_CA_FILE"
CLIENT_AUTH_ENV = "BUGAGARIC_TLS_CLIENT_AUTH"
SERVER_NAME_ENV = "BUGAGARIC_TLS_SERVER_NAME"
_TRUE = {"1", "true", "yes", "on"}


class TlsConfigError(ValueError):
    """A TLS setting that cannot work; the message names the variable and the file."""


@dataclass(frozen=True)
class Tls:
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    client_auth: bool = False
    server_name: str = ""
    # The files' contents, read once at load (grpc takes PEM bytes, not paths).
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    root_certificates: bytes | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.certificate_chain or self.root_certificates)

    @classmethod
    def load(cls, cert_file: str = "", key_file: str = "", ca_file: str = "", client_auth: bool = False,
             server_name: str = "") -> Tls:
        """Reads and checks the files (stdlib ssl parses them, and checks that the key is the certificate's), so a
        broken setting fails here, at start, rather than in the first handshake. TlsConfigError otherwise."""
        cert_file, key_file, ca_file = (str(Path(path).expanduser()) if path else "" for path in (cert_file, key_file,
                                                                                                  ca_file))
        if bool(cert_file) != bool(key_file):
            given, missing = (CERT_ENV, KEY_ENV) if cert_file else (KEY_ENV, CERT_ENV)
            raise TlsConfigError(f"{given}={cert_file or key_file} is set but {missing} is not: a certificate needs "
                                 "its private key, and a key its certificate")
        if client_auth and not ca_file:
            raise TlsConfigError(f"{CLIENT_AUTH_ENV}=1 needs {CA_ENV}: the CA whose certificates clients must present")
        certificate_chain, private_key, root_certificates = (_read(CERT_ENV, cert_file), _read(KEY_ENV, key_file),
                                                             _read(CA_ENV, ca_file))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cert_file:
            try:
                context.load_cert_chain(cert_file, key_file)
            except (ssl.SSLError, ValueError) as exc:
                raise TlsConfigError(f"{CERT_ENV}={cert_file} with {KEY_ENV}={key_file}: not a PEM certificate chain "
                                     f"and its matching private key ({exc})") from None
        if ca_file:
            try:
                context.load_verify_locations(cafile=ca_file)
            except (ssl.SSLError, ValueError) as exc:
                raise TlsConfigError(f"{CA_ENV}={ca_file}: not PEM CA certificates ({exc})") from None
        return cls(cert_file, key_file, ca_file, client_auth, server_name, certificate_chain, private_key,
                   root_certificates)

    @classmethod
    def from_settings(cls, settings: Any) -> Tls:
        """From a settings object with the `tls_*` fields (control plane, agent, gateway: the gateway serves no gRPC,
        so it has no client auth). A broken setting ends the process with the message (this runs at start)."""
        try:
            return cls.load(settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file,
                            getattr(settings, "tls_client_auth", False), settings.tls_server_name)
        except TlsConfigError as exc:
            raise SystemExit(f"TLS settings: {exc}") from None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Tls:
        environ = os.environ if environ is None else environ
        return cls.load(environ.get(CERT_ENV, ""), environ.get(KEY_ENV, ""), environ.get(CA_ENV, ""),
                        environ.get(CLIENT_AUTH_ENV, "").strip().lower() in _TRUE, environ.get(SERVER_NAME_ENV, ""))

    def files(self) -> dict[str, Any]:
        """The settings as plain values (what a child process gets, e.g. in the input fetch step's plan)."""
        return {"cert_file": self.cert_file, "key_file": self.key_file, "ca_file": self.ca_file,
                "client_auth": self.client_auth, "server_name": self.server_name}

    # --- servers -------------------------------------------------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials:
        if not self.certificate_chain:
            raise TlsConfigError(f"{CERT_ENV} and {KEY_ENV} are not set: a server needs its certificate to serve TLS "
                                 f"({CA_ENV} alone only secures the channels it dials)")
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.root_certificates if self.client_auth else None,
            require_client_auth=self.client_auth,
        )

    def bind(self, server: grpc.aio.Server, host: str, port: int, who: str) -> int:
        """Adds the server's port, with TLS when it is on; returns the bound port (0: not bound). Exits with the
        reason when TLS is on but this process has no certificate to serve."""
        address = f"{host}:{port}"
        if not self.enabled:
            warn_if_exposed(host, address, who)
            return server.add_insecure_port(address)
        try:
            credentials = self.server_credentials()
        except TlsConfigError as exc:
            raise SystemExit(f"TLS settings: the {who} {exc}") from None
        log.info("the %s serves TLS on %s%s", who, address,
                 " and requires client certificates signed by " + self.ca_file if self.client_auth else "")
        return server.add_secure_port(address, credentials)

    # --- channels ------------------------------------------------------------------------------------------------

    def channel_credentials(self) -> grpc.ChannelCredentials:
        # The certificate goes along whenever this process has one: a server with client auth on asks for it.
        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates, private_key=self.private_key,
                                            certificate_chain=self.certificate_chain)

    def channel_options(self) -> tuple[tuple[str, Any], ...]:
        return (("grpc.ssl_target_name_override", self.server_name),) if self.server_name else ()

    def aio_channel(self, address: str, options: Iterable[tuple[str, Any]] = (),
                    interceptors: Sequence[Any] | None = None) -> grpc.aio.Channel:
        options = [*options, *self.channel_options()]
        if self.enabled:
            return grpc.aio.secure_channel(address, self.channel_credentials(), options=options,
                                           interceptors=interceptors)
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)

    def channel(self, address: str, options: Iterable[tuple[str, Any]] = ()) -> grpc.Channel:
        """A channel of grpc's threaded API."""
        options = [*options, *self.channel_options()]
        if self.enabled:
            return grpc.secure_channel(address, self.channel_credentials(), options=options)
        return grpc.insecure_channel(address, options=options)


PLAINTEXT = Tls()


def channel_credentials_from_environment() -> tuple[grpc.ChannelCredentials | None, tuple[tuple[str, Any], ...]]:
    """(credentials or None for plaintext, channel options) from the BUGAGARIC_TLS_* variables: for tools that dial
    a service the way the services dial each other (protos.health_probe)."""
    tls = Tls.from_environment()
    return (tls.channel_credentials() if tls.enabled else None), tls.channel_options()


def warn_if_exposed(host: str, address: str, who: str) -> bool:
    """Logs a warning (and says so) when a plaintext server binds an address other hosts can reach."""
    if is_loopback(host):
        return False
    log.warning("the %s serves plaintext gRPC on %s, a non-loopback address: credentials and data cross the network "
                "in the clear (set %s and %s, see README 'TLS')", who, address, CERT_ENV, KEY_ENV)
    return True


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name (or 0.0.0.0 / :: below): reachable from elsewhere as far as we know


def _read(variable: str, path: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{variable}={path} cannot be read: {exc.strerror or exc}") from None
