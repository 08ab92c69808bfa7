"""HTTPS for the browser server: a given certificate and key, or a self-signed pair made here.

Browsers give a page the microphone and AudioWorklets only in a secure context: on
``localhost`` over plain HTTP, anywhere else only over HTTPS. :func:`tls_files` checks a
given pair (both files, readable, matching) or makes a self-signed one with ``cryptography``
for the names the server is reached by (localhost, this machine's name and LAN address, and
any ``extra_names``), kept in ``~/.cache/flowvoice/tls`` and reused while it still covers
them, so a device that trusted it once keeps trusting it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Apple platforms refuse a trusted TLS server certificate valid for longer than 825 days.
VALID_DAYS = 825
#: A kept certificate is made anew when it expires within this many days.
RENEW_DAYS = 30
#: A DNS host name (ASCII after IDNA): letters, digits, '-', '_' and dots.
HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")


class TLSError(Exception):
    """A certificate problem the user can fix (missing file, mismatched key, bad name)."""


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path

    def fingerprint(self) -> str:
        """SHA-256 of the certificate (DER), as browsers show it: ``AB:CD:...``."""
        der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        digest = hashlib.sha256(der).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def default_tls_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flowvoice" / "tls"


def tls_files(
    cert: str | None = None,
    key: str | None = None,
    *,
    self_signed: bool = False,
    extra_names: Iterable[str] = (),
    directory: Path | None = None,
) -> TLSFiles | None:
    """The certificate and key to serve with, or None for plain HTTP.

    A given ``cert`` and ``key`` win; else ``self_signed`` makes (or reuses) a pair in
    ``directory`` (default :func:`default_tls_dir`). Raises :class:`TLSError` for a cert
    without a key (or the reverse), a file that does not exist, or a key that does not match.
    """
    if cert or key:
        if not (cert and key):
            given, missing = ("certificate", "key") if cert else ("key", "certificate")
            raise TLSError(f"a TLS {given} was given without its {missing}: give both")
        files = TLSFiles(Path(cert).expanduser(), Path(key).expanduser())
        check_pair(files)
        return files
    if self_signed:
        return self_signed_files(directory or default_tls_dir(), server_names(extra_names))
    return None


def check_pair(files: TLSFiles) -> None:
    """Raise :class:`TLSError` unless ``files`` load as a matching PEM certificate and key."""
    for what, path in (("certificate", files.cert), ("key", files.key)):
        if not path.is_file():
            raise TLSError(f"TLS {what} {path} does not exist (expected a PEM file)")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            str(files.cert), str(files.key)
        )
    except (ssl.SSLError, OSError) as exc:
        raise TLSError(
            f"cannot use TLS certificate {files.cert} with key {files.key}: {exc} "
            "(expected PEM files, the key unencrypted and matching the certificate)"
        ) from None


def server_names(extra: Iterable[str] = ()) -> list[str]:
    """Names and addresses a LAN client may use: localhost, loopback, this host's name and
    LAN address, then ``extra`` (deduplicated, in that order)."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    address = lan_address()
    if address:
        names.append(address)
    names.extend(n.strip() for n in extra if n.strip())
    return list(dict.fromkeys(names))


def lan_address() -> str | None:
    """The address this machine reaches other hosts from (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only, never contacted
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith(("0.", "127.")) else address


def self_signed_files(directory: Path, names: list[str]) -> TLSFiles:
    """A self-signed certificate for ``names`` in ``directory``: the kept one when it covers
    them and is not about to expire, else a new one (ECDSA P-256)."""
    files = TLSFiles(directory / "cert.pem", directory / "key.pem")
    if files.cert.is_file() and files.key.is_file() and _still_good(files.cert, names):
        return files
    cert_pem, key_pem = make_self_signed(names)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_private(files.key, key_pem)
        files.cert.write_bytes(cert_pem)
    except OSError as exc:
        raise TLSError(
            f"cannot keep the self-signed certificate in {directory}: {exc.strerror or exc} "
            "(set XDG_CACHE_HOME to a writable folder, or give --tls-cert and --tls-key)"
        ) from None
    return files


def make_self_signed(names: list[str], days: int = VALID_DAYS) -> tuple[bytes, bytes]:
    """(certificate PEM, unencrypted key PEM) of a new self-signed server certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "flowvoice (self-signed)"),
            x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def certificate_names(cert_path: Path) -> list[str]:
    """The DNS names and IP addresses a certificate's subjectAltName holds."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName) + [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def _still_good(cert_path: Path, names: list[str]) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    renew_at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=RENEW_DAYS)
    covered = {_normal(n) for n in certificate_names(cert_path)}
    return cert.not_valid_after_utc > renew_at and all(_normal(n) in covered for n in names)


def _san(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_name = ""
    if not HOST_NAME.fullmatch(ascii_name):
        raise TLSError(f"{name!r} is neither an IP address nor a host name")
    return x509.DNSName(ascii_name)


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


# -- command line ---------------------------------------------------------------------------

CERT_ENV, KEY_ENV = "FLOWVOICE_TLS_CERT", "FLOWVOICE_TLS_KEY"
SELF_SIGNED_ENV, NAMES_ENV = "FLOWVOICE_TLS_SELF_SIGNED", "FLOWVOICE_TLS_NAMES"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-cert``, ``--tls-key``, ``--tls-self-signed``, ``--tls-name`` (each with an
    environment variable as its default, for containers)."""
    group = parser.add_argument_group(
        "HTTPS",
        "browsers allow the microphone only on localhost or over HTTPS: serve HTTPS to use "
        "the page from another device (phone, laptop) on the LAN",
    )
    group.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=os.environ.get(CERT_ENV) or None,
        help=f"serve HTTPS with this certificate (chain) file (default: ${CERT_ENV})",
    )
    group.add_argument(
        "--tls-key",
        metavar="PEM",
        default=os.environ.get(KEY_ENV) or None,
        help=f"the certificate's private key, unencrypted (default: ${KEY_ENV})",
    )
    group.add_argument(
        "--tls-self-signed",
        action="store_true",
        default=os.environ.get(SELF_SIGNED_ENV, "").lower() in ("1", "true", "yes"),
        help="serve HTTPS with a self-signed certificate made (once) in "
        f"{default_tls_dir()} for localhost, this host's name and LAN address "
        f"(default: ${SELF_SIGNED_ENV}=1)",
    )
    group.add_argument(
        "--tls-name",
        metavar="NAME",
        action="append",
        default=[n for n in os.environ.get(NAMES_ENV, "").split(",") if n.strip()],
        help="another host name or IP address for the self-signed certificate (repeatable; "
        f"default: ${NAMES_ENV}, comma-separated), e.g. the Docker host's LAN address",
    )


def from_arguments(args: argparse.Namespace) -> TLSFiles | None:
    """The TLS files the parsed arguments ask for (see :func:`add_arguments`)."""
    return tls_files(
        args.tls_cert, args.tls_key, self_signed=args.tls_self_signed, extra_names=args.tls_name
    )


def trust_hint(files: TLSFiles) -> str:
    """What a user of a self-signed certificate needs: its file, names and fingerprint."""
    names = ", ".join(certificate_names(files.cert))
    return (
        f"self-signed certificate {files.cert} for {names}\n"
        f"  SHA-256 fingerprint {files.fingerprint()}\n"
        "  browsers warn once per device: check that they show this fingerprint, then proceed "
        "(for no warning, use a certificate from a local CA such as mkcert with --tls-cert and "
        "--tls-key)"
    )
