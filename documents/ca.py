"""The deployment's certificate authority and its time-stamp authority.

The root key and certificate live in a keys directory given by the caller (mode 0600, made on
first use). The CA issues:

- the department's seal certificate (one per brigade) and each officer's certificate, whose
  keys it keeps in the same directory (or which a PKCS#11 token holds: see ``signers.py``);
- a short-lived certificate to a party **for one signing**, over a public key the party made
  (in the browser, non-extractable); only with a fresh face-match verdict, whose ID and frame
  hash, the hash of the handwritten mark and of the document go into the certificate's
  :data:`SIGNING_EVENT_OID` extension;
- the certificate of the built-in RFC 3161 time-stamp authority.

Revocation: :meth:`DeploymentCA.revoke` records the serial; :meth:`DeploymentCA.crl` signs a CRL
of every revoked serial, written to ``crl.der`` to be published. Every certificate names that
CRL as its distribution point (``crl_url``), and signing embeds the CRL (PAdES B-LT).

An external CA replaces this one by configuration: a class that offers the same methods
(issue_* and crl) over that CA's API can stand in; nothing else in the library reads the keys
directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from asn1crypto import crl as asn1_crl
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CAError

# A private arc (not registered with IANA): the signing event a party certificate was issued
# for, as UTF-8 JSON {verdict_id, frame_sha256, mark_sha256, document_sha256, field}.
SIGNING_EVENT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.14.1")
DEFAULT_CRL_URL = "http://remotecase.invalid/ca/crl.der"
PARTY_CERT_MINUTES = 15
FACE_VERDICT_MAX_AGE = timedelta(minutes=5)


@dataclass(frozen=True)
class FaceVerdict:
    """A face match the verifier recorded in the call (control/ looks it up and passes it)."""

    verdict_id: str
    frame_sha256: str  # hex SHA-256 of the frame that matched
    matched: bool
    at: datetime  # when the verifier decided (aware)


@dataclass(frozen=True)
class Credential:
    """A certificate and its private key (PEM file paths kept for the CLI)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    key_path: Path

    def cert_asn1(self) -> asn1_x509.Certificate:
        return to_asn1(self.cert)

    def key_asn1(self) -> asn1_keys.PrivateKeyInfo:
        der = self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return asn1_keys.PrivateKeyInfo.load(der)


def to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_public(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write by rename. 0600 by default (the issued list names parties); 0644 only for what is
    meant to be published: the root certificate and the CRL."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CAError(
            f"密钥文件 {path} 对其他用户可读（权限 {mode:o}），请改为 0600 / key file "
            f"{path} is readable by others (mode {mode:o}): make it 0600"
        )
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAError(f"密钥文件 {path} 不是 EC 或 RSA 密钥 / {path} is not an EC or RSA key")
    return key


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, org: str, unit: str | None = None) -> x509.Name:
    if not cn.strip() or not org.strip():
        raise CAError("证书的名称和单位不能为空 / a certificate needs a name and an organisation")
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
    ]
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _safe(ident: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_" else "_" for c in ident)
    if not out or out != ident:
        raise CAError(
            f"标识只能含字母、数字、- 和 _：{ident!r} / identifiers may hold letters, "
            f"digits, - and _ only: {ident!r}"
        )
    return out


def signer_matches(role: str, signer_id: str, cert: x509.Certificate) -> bool:
    """Whether ``cert`` is the one the manifest's slot asks for: an officer's certificate names
    the officer's ID (``王警官（o1）``), the seal's is a 电子印章, a party's names the party and
    carries its signing event."""
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    units = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if role == "seal":
        return "电子印章" in units
    if role == "officer":
        return "民警" in units and any(str(cn).endswith(f"（{signer_id}）") for cn in cns)
    if role == "party":
        event = signing_event(cert)
        return "当事人" in units and event is not None and event.get("party_id") == signer_id
    return False


def signing_event(cert: x509.Certificate) -> dict[str, Any] | None:
    """The signing event recorded in a party certificate, or None for other certificates."""
    try:
        ext = cert.extensions.get_extension_for_oid(SIGNING_EVENT_OID)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        return None
    try:
        parsed = json.loads(value.value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


class CertificateAuthority(Protocol):
    """What signing and the command line need of a CA. :class:`DeploymentCA` is the built-in
    one; an external CA (a provincial e-seal platform, a licensed CA) is plugged in by a class
    with these members over that CA's API."""

    @property
    def root(self) -> x509.Certificate: ...

    @property
    def root_pem(self) -> bytes: ...

    def is_revoked(self, serial: int) -> bool: ...

    def revoke(self, serial: int, reason: str = ..., at: datetime | None = None) -> None: ...

    def crl(self, days: int = ...) -> x509.CertificateRevocationList: ...

    def crl_asn1(self) -> asn1_crl.CertificateList: ...

    def certify_key(
        self,
        public_key: ec.EllipticCurvePublicKey,
        role: str,
        ident: str,
        name: str,
        department: str,
        years: int = ...,
    ) -> x509.Certificate: ...

    def tsa(self) -> Credential: ...

    def officer(self, officer_id: str, name: str, department: str) -> Credential: ...

    def seal(self, brigade: str, department: str) -> Credential: ...

    def issue_party(
        self,
        public_key_der: bytes,
        party_id: str,
        name: str,
        verdict: FaceVerdict,
        document_sha256: str,
        field: str,
        mark_sha256: str,
        minutes: int = ...,
        now: datetime | None = None,
    ) -> x509.Certificate: ...


class DeploymentCA:
    """The built-in CA over ``keys_dir``; the root is made on first use."""

    def __init__(
        self, keys_dir: Path, organisation: str = "remotecase 部署", crl_url: str = DEFAULT_CRL_URL
    ) -> None:
        self.dir = keys_dir
        self.org = organisation
        self.crl_url = crl_url
        self._lock = threading.RLock()
        self._depth = 0
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        root_key, root_pem = keys_dir / "ca-root.key", keys_dir / "ca-root.pem"
        with self._locked():
            self._make_root(root_key, root_pem, organisation)
        loaded = _load_key(root_key)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise CAError(f"根密钥 {root_key} 应为 EC 密钥 / the root key must be an EC key")
        self.root_key = loaded
        self.root = x509.load_pem_x509_certificate(root_pem.read_bytes())
        self._state_path = keys_dir / "ca-state.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time, across threads and processes (the server and the command line
        may both issue or revoke)."""
        with self._lock:
            if self._depth:  # re-entered by this thread: the file lock is held already
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            fd = os.open(self.dir / "ca.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._depth = 1
                yield
            finally:
                self._depth = 0
                os.close(fd)  # releases the lock

    @staticmethod
    def _make_root(root_key: Path, root_pem: Path, organisation: str) -> None:
        if not root_key.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            now = datetime.now(UTC)
            subject = _name(f"{organisation} 根证书", organisation)
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=365 * 20))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                    critical=True,
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .sign(key, hashes.SHA256())
            )
            _write_secret(root_key, _pem_key(key))
            _write_public(root_pem, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    # state: issued and revoked serials
    def _state(self) -> dict[str, Any]:
        if not self._state_path.exists():
            return {"issued": {}, "revoked": {}}
        state: dict[str, Any] = json.loads(self._state_path.read_text("utf-8"))
        return state

    def _save(self, state: dict[str, Any]) -> None:
        _write_public(self._state_path, json.dumps(state, ensure_ascii=False, indent=1).encode())

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def _issue(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        not_after: datetime,
        eku: x509.ObjectIdentifier | None,
        what: str,
        extra: tuple[tuple[x509.ExtensionType, bool], ...] = (),
        not_before: datetime | None = None,
    ) -> x509.Certificate:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.root.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(minutes=1))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.KeyUsage(True, True, False, False, False, False, False, False, False), True
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                False,
            )
            .add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier(self.crl_url)], None, None, None
                        )
                    ]
                ),
                False,
            )
        )
        if eku is not None:
            # a time-stamping certificate must carry this EKU only, critical (RFC 3161 2.3)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([eku]), critical=eku == ExtendedKeyUsageOID.TIME_STAMPING
            )
        for ext, critical in extra:
            builder = builder.add_extension(ext, critical)
        cert = builder.sign(self.root_key, hashes.SHA256())
        with self._locked():
            state = self._state()
            state["issued"][format(cert.serial_number, "x")] = {
                "what": what,
                "subject": cert.subject.rfc4514_string(),
                "not_after": not_after.isoformat(),
            }
            self._save(state)
        return cert

    def _credential(
        self,
        stem: str,
        subject: x509.Name,
        eku: x509.ObjectIdentifier | None,
        what: str,
        years: int = 3,
        use_rsa: bool = False,
    ) -> Credential:
        with self._locked():
            return self._credential_locked(stem, subject, eku, what, years, use_rsa)

    def _credential_locked(
        self,
        stem: str,
        subject: x509.Name,
        eku: x509.ObjectIdentifier | None,
        what: str,
        years: int,
        use_rsa: bool,
    ) -> Credential:
        key_path, cert_path = self.dir / f"{stem}.key", self.dir / f"{stem}.pem"
        if key_path.exists() and not cert_path.exists():
            key_path.unlink()  # a crash between the two writes: no certificate was handed out
        if key_path.exists() and cert_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = _load_key(key_path)
            if (
                not self.is_revoked(cert.serial_number)
                and isinstance(key, rsa.RSAPrivateKey) == use_rsa
                and cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1)
            ):
                return Credential(cert, key, key_path)
            # revoked, expiring or of the wrong type: a new key and certificate
            key_path.unlink()
        key = (
            rsa.generate_private_key(65537, 3072)
            if use_rsa
            else ec.generate_private_key(ec.SECP256R1())
        )
        cert = self._issue(
            subject, key.public_key(), datetime.now(UTC) + timedelta(days=365 * years), eku, what
        )
        _write_secret(key_path, _pem_key(key))
        _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return Credential(cert, key, key_path)

    def seal(self, brigade: str, department: str) -> Credential:
        """The department's seal certificate (made on first use, renewed when revoked)."""
        return self._credential(
            f"seal-{_safe(brigade)}",
            _name(department, department, "电子印章"),
            None,
            f"seal {brigade}",
        )

    def officer(self, officer_id: str, name: str, department: str) -> Credential:
        return self._credential(
            f"officer-{_safe(officer_id)}",
            _name(f"{name}（{officer_id}）", department, "民警"),
            None,
            f"officer {officer_id}",
        )

    def certify_key(
        self,
        public_key: ec.EllipticCurvePublicKey,
        role: str,
        ident: str,
        name: str,
        department: str,
        years: int = 3,
    ) -> x509.Certificate:
        """A certificate over a key held elsewhere (a PKCS#11 token, an HSM): officer or seal."""
        if role not in ("officer", "seal"):
            raise CAError(f"未知角色 {role} / unknown role {role}")
        unit = "民警" if role == "officer" else "电子印章"
        cn = f"{name}（{_safe(ident)}）" if role == "officer" else department
        return self._issue(
            _name(cn, department, unit),
            public_key,
            datetime.now(UTC) + timedelta(days=365 * years),
            None,
            f"{role} {ident} (token)",
        )

    def tsa(self) -> Credential:
        """The built-in time-stamp authority's certificate (RSA-3072: pyhanko's in-process
        time-stamper signs with RSA only)."""
        return self._credential(
            "tsa",
            _name(f"{self.org} 时间戳服务", self.org),
            ExtendedKeyUsageOID.TIME_STAMPING,
            "tsa",
            years=10,
            use_rsa=True,
        )

    def issue_party(
        self,
        public_key_der: bytes,
        party_id: str,
        name: str,
        verdict: FaceVerdict,
        document_sha256: str,
        field: str,
        mark_sha256: str,
        minutes: int = PARTY_CERT_MINUTES,
        now: datetime | None = None,
    ) -> x509.Certificate:
        """A certificate for one signing by a party over the key the party made.

        Refused without a matching face verdict younger than :data:`FACE_VERDICT_MAX_AGE`.
        ``public_key_der`` is the SubjectPublicKeyInfo (WebCrypto ``exportKey("spki")``).
        """
        now = now or datetime.now(UTC)
        if not verdict.matched:
            raise CAError(
                f"人脸核验未通过（{verdict.verdict_id}），不签发证书 / the face check "
                f"{verdict.verdict_id} did not match: no certificate"
            )
        age = now - verdict.at
        if age > FACE_VERDICT_MAX_AGE or age < -timedelta(seconds=30):
            raise CAError(
                f"人脸核验结果已过期（{int(age.total_seconds())} 秒前），请重新核验 / "
                f"the face check is {int(age.total_seconds())} s old: check again"
            )
        if len(verdict.frame_sha256) != 64 or len(mark_sha256) != 64:
            raise CAError("帧哈希或签名笔迹哈希无效 / bad frame or mark hash")
        try:
            public_key = serialization.load_der_public_key(public_key_der)
        except ValueError:
            raise CAError("公钥无法解析（应为 SPKI DER）/ the public key is not SPKI DER") from None
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise CAError("公钥应为 ECDSA P-256 / the public key must be ECDSA P-256")
        event = {
            "verdict_id": verdict.verdict_id,
            "frame_sha256": verdict.frame_sha256,
            "verdict_at": verdict.at.isoformat(),
            "mark_sha256": mark_sha256,
            "document_sha256": document_sha256,
            "field": field,
            "party_id": party_id,
        }
        ext = x509.UnrecognizedExtension(
            SIGNING_EVENT_OID, json.dumps(event, ensure_ascii=False, sort_keys=True).encode()
        )
        return self._issue(
            _name(f"{name}（{_safe(party_id)}）", self.org, "当事人"),
            public_key,
            now + timedelta(minutes=minutes),
            None,
            f"party {party_id} {field}",
            ((ext, False),),
            not_before=now - timedelta(minutes=1),
        )

    # revocation
    def revoke(
        self, serial: int, reason: str = "key_compromise", at: datetime | None = None
    ) -> None:
        if reason not in {f.name for f in x509.ReasonFlags}:
            raise CAError(f"未知的吊销原因 {reason} / unknown revocation reason {reason}")
        with self._locked():
            state = self._state()
            key = format(serial, "x")
            if key not in state["issued"]:
                raise CAError(f"本 CA 未签发序列号 {key} / this CA did not issue serial {key}")
            state["revoked"][key] = {"reason": reason, "at": (at or datetime.now(UTC)).isoformat()}
            self._save(state)
        self.publish_crl()

    def is_revoked(self, serial: int) -> bool:
        return format(serial, "x") in self._state()["revoked"]

    def crl(self, days: int = 7) -> x509.CertificateRevocationList:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.root.subject)
            .last_update(now - timedelta(minutes=1))
            .next_update(now + timedelta(days=days))
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                False,
            )
        )
        for serial, info in self._state()["revoked"].items():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial, 16))
                .revocation_date(datetime.fromisoformat(info["at"]))
                .add_extension(x509.CRLReason(x509.ReasonFlags[info["reason"]]), False)
                .build()
            )
        return builder.sign(self.root_key, hashes.SHA256())

    def crl_asn1(self) -> asn1_crl.CertificateList:
        return asn1_crl.CertificateList.load(self.crl().public_bytes(serialization.Encoding.DER))

    def publish_crl(self) -> Path:
        """Write the current CRL to ``crl.der`` in the keys directory (to be served)."""
        path = self.dir / "crl.der"
        _write_public(path, self.crl().public_bytes(serialization.Encoding.DER), 0o644)
        return path


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
