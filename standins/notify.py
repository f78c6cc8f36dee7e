"""Slack and SendGrid on loopback: an HTTPS proxy that answers for hooks.slack.com and
api.sendgrid.com itself, so Prefect's own notification blocks run unchanged in a test.

Prefect's `SlackWebhook` and `SendgridEmail` blocks send through apprise, whose plugins post to
fixed hosts (https://hooks.slack.com/services/..., https://api.sendgrid.com/v3/mail/send). A
process started with `environ()` (HTTPS_PROXY naming this proxy, REQUESTS_CA_BUNDLE its test CA)
sends those requests here: the proxy accepts the CONNECT for an allowed host, ends TLS with a
certificate of its own CA for that host, records the request and answers as the service does
(Slack: 200 `ok`; SendGrid: 202). Any other host is refused, so nothing leaves the machine.
"""

from __future__ import annotations

import datetime
import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOSTS: Final[dict[str, tuple[int, bytes]]] = {
    "hooks.slack.com": (200, b"ok"),
    "api.sendgrid.com": (202, b""),
}


@dataclass(frozen=True)
class Delivery:
    """One request a notification block sent to Slack or SendGrid."""

    host: str
    method: str
    path: str
    headers: dict[str, str]  # keys lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def text(self) -> str:
        """Every string of the JSON body, joined: what a person would read, in any layout."""
        strings: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, str):
                strings.append(value)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(self.json())
        # Slack wants &, < and > escaped in its text; read it as a person sees it.
        return "\n".join(strings).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA (its certificate is the bundle clients trust) and a leaf for HOSTS."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bq-tableau test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.slack.com")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    bundle, cert_file, key_file = (directory / n for n in ("ca.pem", "leaf.pem", "leaf.key"))
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return bundle, cert_file, key_file


class NotificationServices:
    """The proxy; `environ()` is what a process needs to send its notifications here."""

    def __init__(self, directory: Path) -> None:
        self.bundle, cert_file, key_file = _certificates(directory)
        self.deliveries: list[Delivery] = []
        self._changed = threading.Condition()
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert_file, key_file)
        services = self

        class _Handler(BaseHTTPRequestHandler):
            def do_CONNECT(self) -> None:
                host = self.path.rsplit(":", 1)[0]
                if host not in HOSTS:
                    self.send_error(403, f"{host} is not a notification service here")
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                with tls.wrap_socket(self.connection, server_side=True) as stream:
                    reader = stream.makefile("rb")
                    method, path, _ = reader.readline().decode("latin-1").split(" ", 2)
                    headers = http.client.parse_headers(reader)
                    body = reader.read(int(headers.get("Content-Length") or 0))
                    delivery = Delivery(
                        host, method, path, {k.lower(): v for k, v in headers.items()}, body
                    )
                    with services._changed:
                        services.deliveries.append(delivery)
                        services._changed.notify_all()
                    status, answer = HOSTS[host]
                    stream.sendall(
                        f"HTTP/1.1 {status} {http.client.responses[status]}\r\n"
                        f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                        + answer
                    )

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def environ(self) -> dict[str, str]:
        """Environment for a process whose notification blocks must reach this proxy."""
        return {
            "HTTPS_PROXY": f"http://127.0.0.1:{self.port}",
            "https_proxy": f"http://127.0.0.1:{self.port}",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "REQUESTS_CA_BUNDLE": str(self.bundle),
        }

    def wait_for(
        self, predicate: Callable[[Delivery], bool], timeout: float = 60
    ) -> list[Delivery]:
        """The deliveries matching `predicate` once there is one, or [] after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [d for d in self.deliveries if predicate(d)]
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
