"""The local certificate authority of the services: one CA per ``$STOCKBATCH_HOME``,
server certificates it issues, all made with the ``cryptography`` package.

Layout, under ``$STOCKBATCH_HOME/services/tls/``::

    ca.pem                 the CA certificate (0644): what every client trusts
    ca.key                 its private key (0600): never leaves this folder
    <service>.pem          a server certificate (0644), its chain ends at ca.pem
    <service>.key          its private key (0600)
    <service>.p12          the same pair as PKCS#12, for Java servers (write_pkcs12)

:func:`ensure_ca` creates the CA once (``stockbatch services up`` calls it for any
service) and reuses it afterwards, so a client configured with ``ca.pem`` keeps
working across restarts and re-issued certificates. :func:`issue` writes (or
reuses, while valid) the certificate of one service, with SANs for its loopback
names. A server that runs as another OS user (PostgreSQL as root) copies the pair
into its own folder with its own ownership.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stockbatch.services.system import ServiceError, file_lock

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")
"""SANs of a server certificate: every service listens on loopback only."""

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = dt.timedelta(days=30)
"""A server certificate this close to its end is re-issued instead of reused."""

_ORG = "stockbatch local services"


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA's files."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ServerCertificate:
    """A service's certificate and key, and the CA file its clients verify it with."""

    cert_file: Path
    key_file: Path
    ca_file: Path


def tls_dir(home: Path) -> Path:
    """``$STOCKBATCH_HOME/services/tls``: the CA and every issued certificate."""
    return Path(home).expanduser().resolve() / "services" / "tls"


def ca_file(home: Path) -> Path:
    """The CA certificate clients trust (``sslrootcert``, ``ssl_cafile``, ``verify=``)."""
    return tls_dir(home) / "ca.pem"


# ----------------------------------------------------------------------------- files


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic write (temp + rename) with ``mode`` set before the name appears."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)  # the umask may have narrowed or widened O_CREAT's mode
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # servers read it unattended; 0600 protects it
    )


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ServiceError(f"{path}: not an EC or RSA private key")
    return key


# ----------------------------------------------------------------------------- the CA


def ensure_ca(home: Path) -> CertificateAuthority:
    """The CA of ``home``: created on first call (ECDSA P-256, 10 years), then reused."""
    folder = tls_dir(home)
    ca = CertificateAuthority(folder / "ca.pem", folder / "ca.key")
    with file_lock(folder / ".lock"):
        if ca.cert_file.exists() and ca.key_file.exists():
            return ca
        if ca.cert_file.exists() != ca.key_file.exists():
            present = ca.cert_file if ca.cert_file.exists() else ca.key_file
            raise ServiceError(
                f"{present} exists without its pair in {folder}: restore the missing file, or "
                f"delete {folder} to make a new CA (every service must then be restarted)"
            )
        os.chmod(folder, 0o755)  # others may read ca.pem; keys are 0600 files
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
                # A random suffix tells two homes' CAs apart (a CN has at most 64 characters).
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"stockbatch local CA {secrets.token_hex(4)}"
                ),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate a little clock skew
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        # Key first: a cert without its key is the state the check above refuses.
        _write(ca.key_file, _key_pem(key), 0o600)
        _write(ca.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return ca


def _load_ca(ca: CertificateAuthority) -> tuple[x509.Certificate, PrivateKey]:
    return x509.load_pem_x509_certificate(ca.cert_file.read_bytes()), _load_key(ca.key_file)


# ----------------------------------------------------------------------------- server certificates


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _reusable(
    cert_file: Path, key_file: Path, ca_cert: x509.Certificate, hosts: Sequence[str]
) -> bool:
    """True if the stored pair is signed by this CA, names every host and is not near its end."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = _load_key(key_file)
        cert.verify_directly_issued_by(ca_cert)
    except (OSError, ValueError, TypeError, InvalidSignature, ServiceError):
        return False
    if cert.public_key() != key.public_key():
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < dt.datetime.now(dt.UTC):
        return False
    try:
        present = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return False
    return set(_san(hosts)) <= present


def issue(
    home: Path,
    service_name: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    *,
    key_type: KeyType = "ec",
    reuse: bool = True,
) -> ServerCertificate:
    """Write ``<service_name>.pem`` / ``.key`` signed by the CA of ``home`` (made if missing).

    ``hosts`` become the SANs (IP addresses as such, other names as DNS names).
    ``key_type``: ``ec`` (P-256; PostgreSQL, uvicorn, OpenSearch) or ``rsa`` (2048
    bits, for clients that take nothing else). With ``reuse``, a stored pair that is
    still valid for these hosts is kept, so restarts do not churn certificates.
    The certificate serves both ends of a connection (serverAuth and clientAuth:
    brokers and cluster nodes also dial each other).
    """
    if not service_name or "/" in service_name or service_name.startswith("."):
        raise ValueError(f"service name {service_name!r}: a plain file name is needed")
    if not hosts:
        raise ValueError("a server certificate needs at least one host name")
    ca = ensure_ca(home)
    folder = tls_dir(home)
    cert_file, key_file = folder / f"{service_name}.pem", folder / f"{service_name}.key"
    with file_lock(folder / ".lock"):
        ca_cert, ca_key = _load_ca(ca)
        if reuse and _reusable(cert_file, key_file, ca_cert, hosts):
            return ServerCertificate(cert_file, key_file, ca.cert_file)
        key = _new_key(key_type)
        public = key.public_key()
        now = dt.datetime.now(dt.UTC)
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
                        x509.NameAttribute(NameOID.COMMON_NAME, service_name),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=key_type == "rsa",  # RSA key exchange (TLS 1.2)
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(key_file, _key_pem(key), 0o600)
        _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return ServerCertificate(cert_file, key_file, ca.cert_file)


def write_pkcs12(server: ServerCertificate, password: str, out: Path | None = None) -> Path:
    """The pair of ``server`` (with the CA as its chain) as a PKCS#12 file (0600).

    The boundary for Java servers (Kafka, OpenSearch, Elasticsearch): their
    keystores read PKCS#12 directly (``keystore.type=PKCS12``), so no JKS is made.
    ``out`` defaults to ``<service>.p12`` next to the certificate.
    """
    cert = x509.load_pem_x509_certificate(server.cert_file.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(server.ca_file.read_bytes())
    target = out or server.cert_file.with_suffix(".p12")
    data = pkcs12.serialize_key_and_certificates(
        name=server.cert_file.stem.encode(),
        key=_load_key(server.key_file),
        cert=cert,
        cas=[ca_cert],
        encryption_algorithm=serialization.BestAvailableEncryption(password.encode()),
    )
    _write(target, data, 0o600)
    return target
