"""What a commit's SSH signature proves: checked by ``ssh-keygen -Y verify``.

git's SSH signing puts an armored SSHSIG blob in the commit's ``gpgsig`` header; the signed
payload is the commit object without that header. The blob names the signer's public key, so
a signature can be checked once, independently of any access.yaml: ``ssh-keygen -Y verify``
with an allowed-signers file that lists exactly that key, for namespace ``git``, proves the
signature was made by it over this commit. ``identity.signer_problem`` then compares the key
with the one access.yaml lists for the author's user. Results are cached by commit id (a
commit id covers both the payload and the signature, so the result never changes).

Nothing secret passes through here: public keys, signatures and commit payloads only. The
allowed-signers and signature files live in a private temporary directory, removed at once.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from dulwich.errors import ObjectFormatException
from dulwich.objects import Commit

from sdp_reconciler.access.identity import SignatureFacts, SignatureStatus
from sdp_reconciler.access.model import KEY_TYPES, read_ssh_string
from sdp_reconciler.errors import SdpError

NAMESPACE = "git"
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
_TIMEOUT = 20.0


class SignatureToolMissing(SdpError):
    """ssh-keygen is not installed."""


class SignatureVerifier:
    """Checks commit signatures with ssh-keygen, once per commit id."""

    def __init__(self, ssh_keygen: str | None = None) -> None:
        self._tool = ssh_keygen
        self._cache: dict[bytes, SignatureFacts] = {}

    def check(self, commit: Commit) -> SignatureFacts:
        cached = self._cache.get(commit.id)
        if cached is None:
            cached = self._cache[commit.id] = self._check(commit)
        return cached

    def _check(self, commit: Commit) -> SignatureFacts:
        try:
            payload, signature, kind = commit.extract_signature()
        except ObjectFormatException:
            return SignatureFacts(SignatureStatus.NOT_SSH, detail="unknown signature format")
        if signature is None:
            return SignatureFacts(SignatureStatus.UNSIGNED)
        if not signature.startswith(_BEGIN.encode()):
            return SignatureFacts(SignatureStatus.NOT_SSH, detail=str(kind))
        try:
            key = _signer_key(signature)
        except ValueError as e:
            return SignatureFacts(SignatureStatus.INVALID, detail=str(e))
        return self._verify(payload, signature, key)

    def _verify(self, payload: bytes, signature: bytes, key: tuple[str, bytes]) -> SignatureFacts:
        key_type, blob = key
        with tempfile.TemporaryDirectory(prefix="sdp-sig-") as directory:
            folder = Path(directory)
            allowed = folder / "allowed_signers"
            allowed.write_text(
                f'signer namespaces="{NAMESPACE}" {key_type} {base64.b64encode(blob).decode()}\n'
            )
            signature_file = folder / "commit.sig"
            signature_file.write_bytes(signature)
            try:
                result = subprocess.run(
                    [self._ssh_keygen(), "-Y", "verify", "-f", str(allowed), "-I", "signer",
                     "-n", NAMESPACE, "-s", str(signature_file)],
                    input=payload, capture_output=True, timeout=_TIMEOUT, check=False,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                )
            except subprocess.TimeoutExpired:
                return SignatureFacts(SignatureStatus.INVALID, detail="ssh-keygen timed out")
        if result.returncode != 0:
            said = (result.stderr or result.stdout).decode("utf-8", "replace").strip()
            detail = said.splitlines()[-1].strip() if said else f"exit {result.returncode}"
            return SignatureFacts(SignatureStatus.INVALID, detail=detail[:200])
        return SignatureFacts(SignatureStatus.VALID, key=blob)

    def _ssh_keygen(self) -> str:
        if self._tool is None:
            found = shutil.which("ssh-keygen") or (
                "/usr/bin/ssh-keygen" if Path("/usr/bin/ssh-keygen").exists() else None
            )
            if found is None:
                raise SignatureToolMissing(
                    "ssh-keygen is not installed, so signed commits cannot be checked: "
                    "apt-get install openssh-client (scripts/setup does)"
                )
            self._tool = found
        return self._tool


def _signer_key(armored: bytes) -> tuple[str, bytes]:
    """The (type, public key blob) an armored SSHSIG names; ValueError when malformed."""
    text = armored.decode("ascii", "replace").strip()
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != _BEGIN or lines[-1] != _END:
        raise ValueError("the SSH signature is not armored")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error:
        raise ValueError("the SSH signature is not valid base64") from None
    if blob[:6] != b"SSHSIG" or len(blob) < 10:
        raise ValueError("the SSH signature is not an SSHSIG blob")
    public_key, offset = read_ssh_string(blob, 10)
    namespace, _ = read_ssh_string(blob, offset)
    if namespace != NAMESPACE.encode():
        raise ValueError(f"the SSH signature is for namespace {namespace!r}, not 'git'")
    key_type = read_ssh_string(public_key, 0)[0].decode("ascii", "replace")
    if key_type not in KEY_TYPES:  # also keeps anything but a key type out of allowed_signers
        raise ValueError("the SSH signature is made with an unsupported key type")
    return key_type, public_key
