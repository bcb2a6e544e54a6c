"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd), with STARTTLS and a login.

``SmtpReceiver(tmp_path)`` makes a self-signed certificate for 127.0.0.1 with the openssl
command (``ca_file``: what a client must trust), requires STARTTLS before anything else and
accepts one username and password (AUTH only over TLS, aiosmtpd's default). ``messages``
holds every message received, parsed; ``raw`` their bytes; ``logins`` each login tried.
"""

from __future__ import annotations

import email
import email.policy
import secrets
import ssl
import subprocess
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.agents import free_port


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


class _Handler:
    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.raw.append(bytes(envelope.original_content or envelope.content))
        return "250 Message accepted"


class SmtpReceiver:
    def __init__(self, directory: Path, *, username: str = "sdp-mailer",
                 password: str | None = None) -> None:
        self.cert, key = self_signed(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.username = username
        self.password = password or "smtp-" + secrets.token_hex(12)
        self.logins: list[tuple[str, str]] = []
        self._handler = _Handler()
        self.port = free_port()
        self._controller = Controller(
            self._handler, hostname="127.0.0.1", port=self.port, tls_context=context,
            require_starttls=True, authenticator=self._authenticate,
        )

    @property
    def ca_file(self) -> Path:
        return self.cert

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = (auth_data.login.decode(), auth_data.password.decode())
        self.logins.append(login)
        # handled=False: aiosmtpd answers 235 or 535 itself
        return AuthResult(success=login == (self.username, self.password), handled=False)

    @property
    def raw(self) -> list[bytes]:
        with self._handler.lock:
            return list(self._handler.raw)

    @property
    def messages(self) -> list[EmailMessage]:
        return [email.message_from_bytes(r, policy=email.policy.default)  # type: ignore[misc]
                for r in self.raw]

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._controller.stop()
