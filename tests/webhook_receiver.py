"""A real webhook receiver for the tests: uvicorn on a loopback address, in a thread, answering a script.

It records every request (headers, body, the address it arrived on) and answers with the next status of its
``answers`` (then 204); a 3xx answer carries ``location``; ``endless`` answers 200 with a body that never ends.
``make_tls_files`` writes a CA and a server certificate for given host names, for a receiver that speaks https.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.harness.processes import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    server: tuple[str, int]


class Receiver:
    """A loopback HTTP(S) receiver; ``with Receiver(...) as receiver:`` runs it for the block."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, answers: Iterable[int] = (),
                 location: str | None = None, tls: tuple[Path, Path] | None = None, endless: bool = False) -> None:
        self.host, self.port = host, port or free_port()
        self.answers = deque(answers)
        self.location = location
        self.endless = endless
        """Answer 200 with a body that never ends (16 KiB every 10 ms until the client hangs up)."""
        self.received: list[Received] = []
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", lifespan="off",
                                interface="asgi3", access_log=False,
                                ssl_certfile=tls and str(tls[0]), ssl_keyfile=tls and str(tls[1]))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def app(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                  send: Callable[[dict], Awaitable[None]]) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        self.received.append(Received(scope["path"], headers, body, tuple(scope["server"])))
        status = self.answers.popleft() if self.answers else 204
        extra = [(b"location", self.location.encode())] if self.location and 300 <= status < 400 else []
        await send({"type": "http.response.start", "status": 200 if self.endless else status, "headers": extra})
        hung_up = asyncio.ensure_future(receive())
        while self.endless and not hung_up.done():
            await send({"type": "http.response.body", "body": b"x" * 16384, "more_body": True})
            await asyncio.sleep(0.01)
        hung_up.cancel()
        await send({"type": "http.response.body", "body": b""})

    def __enter__(self) -> Receiver:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the webhook receiver did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def make_tls_files(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for a server known by ``names``."""
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)

    def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey,
                    ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - day).not_valid_after(now + day)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]),
                                            critical=False)
        else:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False), critical=True)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("test webhook CA", ca_key, "test webhook CA", ca_key, ca=True)
    server = certificate(names[0], server_key, "test webhook CA", ca_key, ca=False)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths
