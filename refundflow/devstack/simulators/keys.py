"""RSA key pairs with self-signed X.509 certificates, kept as PEM files, for the simulators.

A provider simulator needs two identities: the merchant's (whose public half the provider
checks requests with) and the provider's own (which signs answers and notifications). Each is
generated once under a directory and loaded on every later start, so a restarted dev stack and
an adapter configured from the same files keep agreeing on signatures.

Layout for an identity called ``NAME``: ``NAME.pem`` holds the private key and the certificate
together (written in one atomic step, so concurrent starters cannot end up with a key from one
and a certificate from another); ``NAME.key.pem``, ``NAME.pub.pem`` and ``NAME.crt.pem`` are
derived copies for tools and configs that want one object per file. Secrets that are not
key pairs (WeChat Pay's APIv3 key) are kept the same way with :func:`load_or_create_secret`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

_ENCODING = serialization.Encoding.PEM


@dataclass(frozen=True)
class KeyPair:
    """One identity: PEM texts, and the certificate's serial number as providers print it.
    The key objects are parsed once (loading checks the RSA key, which is slow)."""

    private_pem: str
    public_pem: str
    certificate_pem: str
    serial_no: str
    """Upper-case hex without separators (WeChat Pay's ``serial_no`` style)."""

    @cached_property
    def private_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.private_pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError("not an RSA private key")
        return key

    @cached_property
    def public_key(self) -> rsa.RSAPublicKey:
        key = serialization.load_pem_public_key(self.public_pem.encode())
        if not isinstance(key, rsa.RSAPublicKey):
            raise TypeError("not an RSA public key")
        return key

    def bare_public_key(self) -> str:
        """The public key as one line of base64 DER, the form Alipay's console hands out."""
        return "".join(line for line in self.public_pem.splitlines() if "-----" not in line)

    # SHA256withRSA (PKCS#1 v1.5) in base64 is what WeChat Pay, Alipay and PayPal all sign
    # with; written here from the provider's side, apart from the adapters' code, so that a
    # mistake in one is caught by the other.
    def sign(self, message: bytes) -> str:
        """``message`` signed with the private key, base64."""
        signature = self.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode()

    def verifies(self, message: bytes, signature: str) -> bool:
        """Whether ``signature`` (base64) is the private key's over ``message``."""
        try:
            self.public_key.verify(
                base64.b64decode(signature, validate=True),
                message,
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def generate(common_name: str, *, bits: int = 2048, days: int = 3650) -> KeyPair:
    """A fresh key pair and a certificate for it, signed by itself."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        # Positive and below 2**159, as RFC 5280 asks of serial numbers.
        .serial_number(secrets.randbits(159) | 1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    private_pem = key.private_bytes(
        _ENCODING, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return _pair(private_pem, cert.public_bytes(_ENCODING).decode())


def load_or_create(directory: Path, name: str, *, common_name: str | None = None) -> KeyPair:
    """The identity ``name`` under ``directory``, generated on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    bundle = directory / f"{name}.pem"
    if not bundle.exists():
        fresh = generate(common_name or name)
        _create_exclusively(bundle, fresh.private_pem + fresh.certificate_pem)
    pair = load_bundle(bundle)
    for suffix, text in (
        (".key.pem", pair.private_pem),
        (".pub.pem", pair.public_pem),
        (".crt.pem", pair.certificate_pem),
    ):
        target = directory / f"{name}{suffix}"
        if not target.exists() or target.read_text() != text:
            _replace(target, text)
    return pair


def load_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret kept as one line of text (WeChat Pay's APIv3 key...), made on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_exclusively(path, make() + "\n")
    return path.read_text().strip()


def load_or_create_secrets(path: Path, prefixes: dict[str, str]) -> dict[str, str]:
    """Named secrets (``prefix`` + random hex) kept together as JSON, made on first use;
    processes starting at once agree on the first file written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fresh = {name: prefix + secrets.token_hex(24) for name, prefix in prefixes.items()}
        _create_exclusively(path, json.dumps(fresh))
    stored: dict[str, str] = json.loads(path.read_text())
    return stored


def load_bundle(path: Path) -> KeyPair:
    """A ``NAME.pem`` bundle: a private key and its certificate, in either order."""
    text = path.read_text()
    key_block = _block(text, "PRIVATE KEY")
    cert_block = _block(text, "CERTIFICATE")
    return _pair(key_block, cert_block)


def certificate_serial(certificate_pem: str) -> str:
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    return f"{cert.serial_number:X}"


def _pair(private_pem: str, certificate_pem: str) -> KeyPair:
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    public_pem = (
        cert.public_key()
        .public_bytes(_ENCODING, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(
        private_pem=private_pem,
        public_pem=public_pem,
        certificate_pem=certificate_pem,
        serial_no=f"{cert.serial_number:X}",
    )


def _block(text: str, label: str) -> str:
    for begin_label in (label, f"RSA {label}"):
        begin, end = f"-----BEGIN {begin_label}-----", f"-----END {begin_label}-----"
        start = text.find(begin)
        if start >= 0:
            stop = text.index(end, start) + len(end)
            return text[start:stop] + "\n"
    raise ValueError(f"no {label} block in the key bundle")


def _create_exclusively(path: Path, text: str) -> None:
    # Write aside, then hard-link into place: link() fails if another process got there
    # first, and then its bundle is the one everybody loads.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _replace(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
