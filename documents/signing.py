"""PAdES signatures (pyhanko): officers and the seal sign with keys the deployment holds (or a
token); a party signs with a key only the party holds, through pyhanko's interrupted signing.

Every signature is PAdES B-LT: an RFC 3161 timestamp on the signature, the chain and the CRL in
the document's DSS, so it validates offline years later. Several signatures go on one PDF by
incremental update, each into the field the manifest names (its page and box).

All functions here block (hashing, signing, pyhanko's own event loop): from asyncio, call them
through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from PIL import Image
from pyhanko.pdf_utils.images import PdfImage
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument, PostSignInstructions
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.aiohttp_client import HTTPTimeStamper
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko.stamp import StaticStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from .appearance import flatten
from .ca import CertificateAuthority, Credential, to_asn1
from .errors import SigningError
from .manifest import read_manifest

T = TypeVar("T")


class _NoFetchNotice(logging.Filter):
    """pyhanko warns on every signature that fetching is off; here it is off by design (the CA's
    CRL is handed to it), so the notice says nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "fetching is not allowed" not in record.getMessage()


logging.getLogger("pyhanko.sign.signers.pdf_signer").addFilter(_NoFetchNotice())
# The built-in TSA's policy (private arc, like ca.SIGNING_EVENT_OID).
TSA_POLICY = "1.3.6.1.4.1.55555.14.2"
# CMS signed attributes a party signs with its own key: the handwritten mark's stroke data
# (canonical JSON, see appearance.strokes_json) and the signing event (the face verdict...).
MARK_ATTR = "1.3.6.1.4.1.55555.14.3"
EVENT_ATTR = "1.3.6.1.4.1.55555.14.4"
RESERVED = 24000  # bytes of the /Contents hex string: CMS + timestamp + chain fit easily


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class SignatureProvider(Protocol):
    """Who signs: a pyhanko :class:`~pyhanko.sign.signers.Signer` (certificate, chain and the
    key operation). The built-in CA's key files, a PKCS#11 token or a licensed e-seal service
    each implement this; the rest of the library does not care which."""

    role: str  # officer | seal

    def pyhanko_signer(self) -> signers.Signer: ...


@dataclass
class KeyFileSigner:
    """A key the deployment keeps in its keys directory (officer or seal)."""

    credential: Credential
    root: x509.Certificate
    role: str

    def pyhanko_signer(self) -> signers.Signer:
        return signers.SimpleSigner(
            signing_cert=self.credential.cert_asn1(),
            signing_key=self.credential.key_asn1(),
            cert_registry=SimpleCertificateStore.from_certs([to_asn1(self.root)]),
        )


@dataclass
class Pkcs11Provider:
    """A key that never leaves a PKCS#11 token (SoftHSM in the tests, an HSM or a USB key in a
    deployment). The certificate is given (issued by the CA over the token's public key)."""

    lib: str
    token_label: str
    pin: str
    key_label: str
    cert: x509.Certificate
    root: x509.Certificate
    role: str
    # hash here and have the token sign the digest (CKM_ECDSA): SoftHSM and many tokens have
    # no CKM_ECDSA_SHA256
    raw_mechanism: bool = True
    _session: Any = field(default=None, repr=False)

    def pyhanko_signer(self) -> signers.Signer:
        from pyhanko.config.pkcs11 import TokenCriteria
        from pyhanko.sign import pkcs11 as ph11

        if self._session is None:
            self._session = ph11.open_pkcs11_session(
                self.lib, token_criteria=TokenCriteria(label=self.token_label), user_pin=self.pin
            )
        return ph11.PKCS11Signer(
            self._session,
            key_label=self.key_label,
            signing_cert=to_asn1(self.cert),
            ca_chain=[to_asn1(self.root)],
            use_raw_mechanism=self.raw_mechanism,
        )

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class BuiltinTimeStamper(DummyTimeStamper):
    """The deployment's own RFC 3161 time-stamp authority, in process: pyhanko's time-stamper
    with the TSA key from the keys directory and this deployment's policy OID."""

    def _build_tst_info(self, message_imprint: Any, dt: datetime, req: Any) -> Any:
        info = super()._build_tst_info(message_imprint, dt, req)
        info["policy"] = TSA_POLICY
        return info


@dataclass
class SigningSetup:
    """The CA whose chain and CRL go into each signature, and the time-stamp authority."""

    ca: CertificateAuthority
    tsa_url: str | None = None  # an external RFC 3161 TSA; None: the built-in one

    def timestamper(self) -> TimeStamper:
        if self.tsa_url:
            return HTTPTimeStamper(self.tsa_url)
        tsa = self.ca.tsa()  # only the built-in TSA needs this
        return BuiltinTimeStamper(
            tsa_cert=tsa.cert_asn1(),
            tsa_key=tsa.key_asn1(),
            certs_to_embed=SimpleCertificateStore.from_certs([to_asn1(self.ca.root)]),
        )

    def validation_context(self) -> ValidationContext:
        return ValidationContext(
            trust_roots=[to_asn1(self.ca.root)],
            crls=[self.ca.crl_asn1()],
            allow_fetching=False,
            revocation_mode="require",
        )


def _check_field(pdf: bytes, field_name: str, role: str) -> tuple[dict[str, Any], PdfFileReader]:
    reader = PdfFileReader(io.BytesIO(pdf))
    manifest = read_manifest(reader)
    slots = {r["field"]: r for r in manifest["required_signatures"]}
    slot = slots.get(field_name)
    if slot is None:
        raise SigningError(
            f"文书中没有签名位置 {field_name} / the document has no signature field {field_name}"
        )
    if slot["role"] != role:
        raise SigningError(
            f"签名位置 {field_name} 属于 {slot['role']}，不是 {role} / field "
            f"{field_name} is for a {slot['role']}, not a {role}"
        )
    if slot.get("refused"):
        raise SigningError(
            f"{slot['name']}已拒绝签名，记录在文书上 / {field_name}: the signer "
            "refused, as the document records"
        )
    if any(s.field_name == field_name for s in reader.embedded_signatures):
        raise SigningError(f"{field_name} 已签名 / {field_name} is already signed")
    return slot, reader


def _pdf_signer(
    slot: dict[str, Any],
    signer: signers.Signer,
    setup: SigningSetup,
    appearance: Image.Image | None,
    name: str,
) -> signers.PdfSigner:
    box = tuple(round(v) for v in slot["box"])
    meta = signers.PdfSignatureMetadata(
        field_name=slot["field"],
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        embed_validation_info=True,
        validation_context=setup.validation_context(),
        name=name,
        reason=f"{slot['label']}签名",
        use_pades_lta=False,
    )
    style = (
        StaticStampStyle(
            background=PdfImage(flatten(appearance)), border_width=0, background_opacity=1.0
        )
        if appearance is not None
        else None
    )
    return signers.PdfSigner(
        meta,
        signer=signer,
        timestamper=setup.timestamper(),
        stamp_style=style,
        new_field_spec=fields.SigFieldSpec(slot["field"], on_page=int(slot["page"]) - 1, box=box),
    )  # type: ignore[arg-type]


def sign_document(
    pdf: bytes,
    field_name: str,
    provider: SignatureProvider,
    setup: SigningSetup,
    appearance: Image.Image | None = None,
) -> bytes:
    """Add one signature (officer or seal) to ``pdf`` by incremental update; the new PDF."""
    from .ca import signer_matches

    slot, _ = _check_field(pdf, field_name, provider.role)
    signer = provider.pyhanko_signer()
    cert = signer.signing_cert
    if cert is None or not signer_matches(
        slot["role"], slot["signer_id"], x509.load_der_x509_certificate(cert.dump())
    ):
        raise SigningError(
            f"签名证书不是{slot['label']} {slot['name']}的 / the certificate is not "
            f"that of {field_name}'s signer"
        )
    if setup.ca.is_revoked(cert.serial_number):
        raise SigningError(
            f"证书 {cert.serial_number:x} 已吊销，不能签名 / certificate "
            f"{cert.serial_number:x} is revoked"
        )
    pdf_signer = _pdf_signer(slot, signer, setup, appearance, slot["name"])
    out = io.BytesIO()
    try:
        _run(
            pdf_signer.async_sign_pdf(
                IncrementalPdfFileWriter(io.BytesIO(pdf)), output=out, bytes_reserved=RESERVED
            )
        )
    except SigningError:
        raise
    except Exception as exc:  # pyhanko refuses a revoked or untrusted signer here
        raise SigningError(f"签名失败：{exc} / signing failed: {exc}") from exc
    return out.getvalue()


@dataclass
class PendingSignature:
    """A party signature prepared and waiting for the party's key: send :attr:`to_be_signed`
    to the browser, which signs it with ECDSA P-256 / SHA-256 (WebCrypto hashes it itself)."""

    field: str
    cert: asn1_x509.Certificate
    signed_attrs: cms.CMSAttributes
    prep_digest: PreparedByteRangeDigest
    post_sign: PostSignInstructions | None
    output: io.BytesIO
    created: datetime

    @property
    def to_be_signed(self) -> bytes:
        """The DER of the CMS signed attributes (they carry the document's digest)."""
        return bytes(self.signed_attrs.dump())

    @property
    def document_digest(self) -> bytes:
        return bytes(self.prep_digest.document_digest)

    def state(self, base_pdf: bytes) -> dict[str, Any]:
        """What :func:`resume_party_signing` needs to finish this signature in another process
        (JSON-ready; it holds no secret). The prepared PDF is ``base_pdf`` followed by the
        incremental update that reserves the signature: only that update is kept, so the
        document's text is not copied out of its encrypted store."""
        prepared = self.output.getvalue()
        if not prepared.startswith(base_pdf):
            raise SigningError(
                "准备的签名不在该文书版本之上 / the prepared signature is not over this revision"
            )
        b64 = base64.b64encode
        return {
            "v": 1,
            "field": self.field,
            "cert": b64(self.cert.dump()).decode(),
            "signed_attrs": b64(self.to_be_signed).decode(),
            "digest": b64(self.document_digest).decode(),
            "region": [
                self.prep_digest.reserved_region_start,
                self.prep_digest.reserved_region_end,
            ],
            "base_sha256": hashlib.sha256(base_pdf).hexdigest(),
            "update": b64(zlib.compress(prepared[len(base_pdf) :])).decode(),
            "created": self.created.isoformat(),
        }


def _octets_attr(oid: str, data: bytes) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": oid, "values": [core.OctetString(data)]})


def read_party_attrs(signer_info: Any) -> tuple[bytes | None, dict[str, Any] | None]:
    """The stroke data and the signing event a party signed (from its CMS signed attributes)."""
    mark: bytes | None = None
    event: dict[str, Any] | None = None
    for attr in signer_info["signed_attrs"]:
        oid = attr["type"].dotted
        if oid not in (MARK_ATTR, EVENT_ATTR):
            continue
        raw = core.OctetString.load(attr["values"][0].dump()).native
        if oid == MARK_ATTR:
            mark = bytes(raw)
        else:
            try:
                parsed = json.loads(bytes(raw).decode("utf-8"))
                event = parsed if isinstance(parsed, dict) else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                event = None
    return mark, event


def prepare_party_signing(
    pdf: bytes,
    field_name: str,
    party_cert: x509.Certificate,
    setup: SigningSetup,
    appearance: Image.Image | None = None,
    mark: bytes | None = None,
) -> PendingSignature:
    """Reserve the party's signature in ``field_name`` and compute what the party's key signs.

    ``party_cert`` is the short-lived certificate :meth:`DeploymentCA.issue_party` made for this
    signing; the manifest's field must be a party's. ``mark`` (``appearance.strokes_json``) is
    the stroke data of the handwritten mark: it goes, with the certificate's signing event, into
    the signed attributes, so the party's own key signs them and the PDF keeps them.
    """
    from .appearance import MAX_MARK_BYTES
    from .ca import sha256_hex, signing_event

    slot, _ = _check_field(pdf, field_name, "party")
    event = signing_event(party_cert)
    if (
        event is None
        or event.get("field") != field_name
        or event.get("party_id") != slot["signer_id"]
    ):
        raise SigningError(
            f"证书不是为签名位置 {field_name} 签发的当事人证书 / the certificate is "
            f"not a party certificate issued for {field_name}"
        )
    if event.get("document_sha256") != sha256_hex(pdf):
        raise SigningError(
            "证书是为文书的另一个版本签发的 / the certificate was issued for "
            "another version of the document"
        )
    if mark is not None:
        if len(mark) > MAX_MARK_BYTES:
            raise SigningError(f"签名笔迹数据过大（{len(mark)} 字节）/ the mark is too large")
        if sha256_hex(mark) != event.get("mark_sha256"):
            raise SigningError(
                "签名笔迹与证书中的哈希不符 / the mark does not match the hash in the certificate"
            )
    extra = [_octets_attr(EVENT_ATTR, json.dumps(event, sort_keys=True).encode())]
    if mark is not None:
        extra.append(_octets_attr(MARK_ATTR, mark))
    reserved = RESERVED + 2 * (len(mark or b"") + 512)
    cert = to_asn1(party_cert)
    registry = SimpleCertificateStore.from_certs([to_asn1(setup.ca.root)])
    ext = signers.ExternalSigner(signing_cert=cert, cert_registry=registry, signature_value=72)

    async def prepare() -> PendingSignature:
        pdf_signer = _pdf_signer(slot, ext, setup, appearance, slot["name"])
        prep, tbs, output = await pdf_signer.async_digest_doc_for_signing(
            IncrementalPdfFileWriter(io.BytesIO(pdf)), bytes_reserved=reserved
        )
        base = await ext.signed_attrs(prep.document_digest, "sha256", use_pades=True)
        attrs = cms.CMSAttributes([*base, *extra])
        assert isinstance(output, io.BytesIO)
        return PendingSignature(
            field_name, cert, attrs, prep, tbs.post_sign_instructions, output, datetime.now(UTC)
        )

    try:
        return _run(prepare())
    except SigningError:
        raise
    except Exception as exc:
        raise SigningError(f"无法准备签名：{exc} / cannot prepare the signature: {exc}") from exc


def resume_party_signing(
    state: dict[str, Any], base_pdf: bytes, setup: SigningSetup
) -> PendingSignature:
    """A :class:`PendingSignature` again from :meth:`PendingSignature.state` and the revision
    it was prepared over (checked by its hash), e.g. in another worker than the one that
    prepared it. The post-signing instructions (what goes into the DSS) are collected again
    with the same signer, the same CA and the same time-stamp authority, as pyhanko did when
    preparing; a certificate revoked meanwhile is refused here."""
    try:
        if state.get("v") != 1 or hashlib.sha256(base_pdf).hexdigest() != state["base_sha256"]:
            raise ValueError("another revision")
        field_name = str(state["field"])
        cert = asn1_x509.Certificate.load(base64.b64decode(state["cert"]))
        signed_attrs = cms.CMSAttributes.load(base64.b64decode(state["signed_attrs"]))
        start, end = (int(v) for v in state["region"])
        prep = PreparedByteRangeDigest(base64.b64decode(state["digest"]), start, end)
        update = zlib.decompress(base64.b64decode(state["update"]))
        created = datetime.fromisoformat(str(state["created"]))
        _ = signed_attrs.native  # parse it all now: a broken state fails here, not later
    except (KeyError, TypeError, ValueError, zlib.error) as exc:
        raise SigningError(
            f"待完成的签名无法恢复：{exc} / the pending signature cannot be restored: {exc}"
        ) from None
    slot, _ = _check_field(base_pdf, field_name, "party")
    registry = SimpleCertificateStore.from_certs([to_asn1(setup.ca.root)])
    ext = signers.ExternalSigner(signing_cert=cert, cert_registry=registry, signature_value=72)

    async def instructions() -> PostSignInstructions:
        pdf_signer = _pdf_signer(slot, ext, setup, None, slot["name"])
        writer = IncrementalPdfFileWriter(io.BytesIO(base_pdf))  # only read, never written
        session = pdf_signer.init_signing_session(writer)
        info = await session.perform_presign_validation(writer)
        if info is None:  # pragma: no cover - the setup always gives a validation context
            raise SigningError("没有验证上下文 / no validation context")
        meta = pdf_signer.signature_meta
        return PostSignInstructions(
            validation_info=info,
            timestamp_md_algorithm="sha256",
            timestamp_field_name=meta.timestamp_field_name,
            dss_settings=meta.dss_settings,
            tight_size_estimates=meta.tight_size_estimates,
            embed_roots=ext.embed_roots,
            strict=writer.prev.strict,
            decode_limits=writer.prev.decode_context.limits,
        )

    try:
        post_sign = _run(instructions())
    except SigningError:
        raise
    except Exception as exc:  # e.g. the party certificate was revoked meanwhile
        raise SigningError(
            f"待完成的签名无法恢复：{exc} / the pending signature cannot be restored: {exc}"
        ) from exc
    output = io.BytesIO(base_pdf + update)
    return PendingSignature(field_name, cert, signed_attrs, prep, post_sign, output, created)


def p1363_to_der(signature: bytes) -> bytes:
    """WebCrypto's ECDSA signature (r || s, 64 bytes for P-256) as CMS wants it (DER)."""
    if len(signature) != 64:
        raise SigningError(
            f"签名值长度应为 64 字节（r||s），实为 {len(signature)} / an ECDSA "
            f"P-256 signature is 64 bytes (r||s), got {len(signature)}"
        )
    return encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )


def finish_party_signing(pending: PendingSignature, signature: bytes, setup: SigningSetup) -> bytes:
    """Embed the party's signature (r||s from WebCrypto, or DER); the signed PDF.

    The signature is checked against the party certificate first: a wrong one is refused here
    rather than producing a PDF that does not validate.
    """
    der = p1363_to_der(signature) if len(signature) == 64 else signature
    public_key = x509.load_der_x509_certificate(pending.cert.dump()).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    try:
        public_key.verify(der, pending.to_be_signed, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise SigningError(
            "当事人的签名值与证书不符 / the party's signature does not match its certificate"
        ) from None
    registry = SimpleCertificateStore.from_certs([to_asn1(setup.ca.root)])
    ext = signers.ExternalSigner(
        signing_cert=pending.cert, cert_registry=registry, signature_value=der
    )

    async def finish() -> bytes:
        sig_cms = await ext.async_sign_prescribed_attributes(
            "sha256", signed_attrs=pending.signed_attrs, timestamper=setup.timestamper()
        )
        await PdfTBSDocument.async_finish_signing(
            pending.output,
            prepared_digest=pending.prep_digest,
            signature_cms=sig_cms,
            post_sign_instr=pending.post_sign,
            validation_context=setup.validation_context(),
        )
        return pending.output.getvalue()

    return _run(finish())


def builtin_signer(
    setup: SigningSetup,
    role: str,
    *,
    officer_id: str = "",
    name: str = "",
    brigade: str = "",
    department: str = "",
) -> KeyFileSigner:
    """The built-in CA's officer or seal signer (keys made on first use)."""
    if role == "officer":
        cred = setup.ca.officer(officer_id, name, department)
    elif role == "seal":
        cred = setup.ca.seal(brigade, department)
    else:
        raise SigningError(f"未知角色 {role} / unknown role {role}")
    return KeyFileSigner(cred, setup.ca.root, role)


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
