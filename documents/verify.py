"""Offline validation of a signed document: with only the PDF and the root certificate.

For each signature: the document bytes it covers are unchanged (digest), the signature value is
sound, the signer's certificate chains to the given root, was not revoked and was within its
validity **at the time the RFC 3161 timestamp proves** (point-in-time validation with the CRL
embedded in the document's DSS, or a newer CRL given with ``crls``), the timestamp is present
and valid, and nothing after it changed the document other than later signatures (pyhanko's
difference analysis; a page added is named as such). Then the manifest (from the document's
first revision) tells which signatures are required, and which are missing or refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime
from typing import Any

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.errors import NoDSSFoundError
from pyhanko_certvalidator import ValidationContext

from .ca import signer_matches, signing_event
from .errors import DocumentError
from .manifest import read_manifest
from .signing import read_party_attrs


@dataclass
class SignatureReport:
    field: str
    signer: str
    role: str | None
    signed_at: datetime | None  # the timestamp's time
    ok: bool
    problems: list[str] = dc_field(default_factory=list)
    signing_event: dict[str, Any] | None = None  # a party's face verdict, mark hash...
    serial: str = ""  # the signer certificate's serial (hex), e.g. to revoke it
    mark_sha256: str | None = None  # a party's handwritten mark, as signed

    def as_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "signer": self.signer,
            "role": self.role,
            "serial": self.serial,
            "mark_sha256": self.mark_sha256,
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
            "ok": self.ok,
            "problems": self.problems,
            "signing_event": self.signing_event,
        }


# documents that an agreement of every signer makes: a refused box is no agreement (a refusal
# on a 调解书 ends the mediation with a 调解终结书, 146号令 art.94), not a box no longer needed
VOID_ON_REFUSAL = frozenset({"mediation_agreement"})


@dataclass
class DocumentState:
    """Which required signatures are present, refused, still missing; effective when none is
    missing. From the PDF's fields alone (no crypto): :func:`verify_pdf` decides validity."""

    kind: str
    number: str
    required: list[dict[str, Any]]
    signed: list[str]
    refused: list[str]
    missing: list[dict[str, Any]]

    @property
    def effective(self) -> bool:
        if self.refused and self.kind in VOID_ON_REFUSAL:
            return False
        return not self.missing

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "number": self.number,
            "signed": self.signed,
            "refused": self.refused,
            "effective": self.effective,
            "missing": [
                {"field": m["field"], "name": m["name"], "label": m["label"]} for m in self.missing
            ],
        }


@dataclass
class VerifyReport:
    ok: bool
    problems: list[str]
    signatures: list[SignatureReport]
    state: DocumentState | None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "signatures": [s.as_json() for s in self.signatures],
            "state": self.state.as_json() if self.state else None,
        }


def _state(reader: PdfFileReader, signed_fields: Sequence[str]) -> DocumentState:
    manifest = read_manifest(reader)
    required = manifest["required_signatures"]
    refused = [r["field"] for r in required if r.get("refused")]
    missing = [r for r in required if r["field"] not in signed_fields and not r.get("refused")]
    return DocumentState(
        manifest["kind"],
        manifest.get("number", ""),
        required,
        list(signed_fields),
        refused,
        missing,
    )


def document_state(pdf: bytes) -> DocumentState:
    """Who has signed and who is still missing (fast: no validation)."""
    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    return _state(reader, [s.field_name for s in reader.embedded_regular_signatures])


def _pages(reader: PdfFileReader, revision: int) -> int:
    root = reader.get_historical_root(revision)
    return int(root["/Pages"]["/Count"])


def _cert_problem_zh(status: Any) -> str:
    indic = status.trust_problem_indic
    name = getattr(indic, "name", str(indic))
    if status.revoked:
        rd = status.revocation_details
        when = getattr(rd, "revocation_date", None)
        return (
            f"签名证书在签名时已被吊销（{when}）/ the signer's certificate was revoked "
            f"when it signed ({when})"
        )
    if name in ("OUT_OF_BOUNDS_NO_POE", "EXPIRED", "NOT_YET_VALID", "OUT_OF_BOUNDS_NOT_REVOKED"):
        return (
            f"签名时证书不在有效期内（{name}）/ the certificate was not valid at signing "
            f"time ({name})"
        )
    if name in ("NO_CERTIFICATE_CHAIN_FOUND", "CHAIN_CONSTRAINTS_FAILURE"):
        return "签名证书不是由给定的根证书签发 / the signer is not certified by the given root"
    if name in ("TRY_LATER", "REVOCATION_OUT_OF_BOUNDS_NO_POE"):
        return "缺少签名时的吊销信息（CRL）/ no revocation data (CRL) for the signing time"
    return f"签名证书不可信（{name}）/ the signer's certificate is not trusted ({name})"


def verify_pdf(
    pdf: bytes,
    trust_roots: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> VerifyReport:
    """Validate every signature of ``pdf`` against ``trust_roots``; name every problem.

    Blocking: call through ``asyncio.to_thread`` from the event loop.
    """
    from cryptography.hazmat.primitives import serialization

    roots = [
        asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in trust_roots
    ]
    extra_crls = [
        asn1_crl.CertificateList.load(c.public_bytes(serialization.Encoding.DER)) for c in crls
    ]
    problems: list[str] = []
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        sigs = list(reader.embedded_regular_signatures)
    except Exception as exc:
        return VerifyReport(
            False,
            [
                f"文件无法解析，可能已被改动：{exc} / the file cannot be "
                f"parsed, it may have been altered: {exc}"
            ],
            [],
            None,
        )
    if not roots:
        problems.append(
            "未指定根证书（--trust），无法确认签名人 / no trust root given (--trust): "
            "signers cannot be checked"
        )
    try:
        manifest_state = _state(reader, [s.field_name for s in sigs])
        manifest_fields = {r["field"]: r for r in manifest_state.required}
    except (DocumentError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        manifest_state, manifest_fields = None, {}
        problems.append(
            str(exc)
            if isinstance(exc, DocumentError)
            else f"文书清单无法读取：{exc} / the manifest cannot be read: {exc}"
        )
    except Exception as exc:  # a damaged object tree
        manifest_state, manifest_fields = None, {}
        problems.append(f"文书清单无法读取：{exc} / the manifest cannot be read: {exc}")
    dss: DocumentSecurityStore | None
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        dss = None
        problems.append(
            "文件中没有长期验证数据（DSS：证书链和 CRL）/ no long-term validation "
            "data (DSS: chain and CRLs) in the file"
        )
    except Exception as exc:
        dss = None
        problems.append(f"长期验证数据（DSS）损坏：{exc} / the DSS is damaged: {exc}")
    try:
        final_pages = _pages(reader, reader.xrefs.total_revisions - 1)
    except Exception as exc:
        return VerifyReport(
            False,
            [*problems, f"文件结构损坏：{exc} / the file's structure is damaged: {exc}"],
            [],
            manifest_state,
        )
    reports: list[SignatureReport] = []
    valid_fields: list[str] = []
    for sig in sigs:
        rep = _check_signature(
            sig,
            reader,
            roots,
            extra_crls,
            dss,
            final_pages,
            manifest_fields.get(sig.field_name),
            pdf,
        )
        reports.append(rep)
        if rep.ok:
            valid_fields.append(sig.field_name)
        problems.extend(f"{rep.field}：{p}" for p in rep.problems)
    if manifest_state is not None:
        for slot in manifest_state.required:
            if slot["field"] in manifest_state.refused:
                continue
            if slot["field"] not in manifest_state.signed:
                problems.append(
                    f"缺少必需的签名：{slot['label']} {slot['name']}（{slot['field']}，"
                    f"第{slot['page']}页）/ a required signature is missing: "
                    f"{slot['field']}"
                )
        for s in sigs:
            if s.field_name not in manifest_fields:
                problems.append(
                    f"{s.field_name}：不是文书清单中的签名位置 / {s.field_name}: not "
                    "a signature field the manifest lists"
                )
    return VerifyReport(not problems, problems, reports, manifest_state)


def _timestamp_time(sig: Any) -> datetime | None:
    """The time in the signature's RFC 3161 token (unsigned attribute), not yet validated."""
    try:
        attrs = sig.signer_info["unsigned_attrs"]
        if attrs.native is None:
            return None
        for attr in attrs:
            if attr["type"].native == "signature_time_stamp_token":
                token = attr["values"][0]
                info = token["content"]["encap_content_info"]["content"].parsed
                when: datetime = info["gen_time"].native
                return when
    except (KeyError, ValueError, TypeError, IndexError):
        return None
    return None


def _prefix_hashes(pdf: bytes) -> set[str]:
    """SHA-256 of every earlier revision of the file (each ends at a %%EOF marker)."""
    out = set()
    start = 0
    while (i := pdf.find(b"%%EOF", start)) >= 0:
        end = i + 5
        for tail in (b"", b"\n", b"\r\n", b"\r"):
            if pdf[end : end + len(tail)] == tail:
                out.add(hashlib.sha256(pdf[: end + len(tail)]).hexdigest())
        start = end
    return out


def _check_party(sig: Any, cert: Any, rep: SignatureReport, pdf: bytes) -> None:
    problems = rep.problems
    event = signing_event(x509.load_der_x509_certificate(cert.dump()))
    rep.signing_event = event
    if not event or not event.get("verdict_id") or not event.get("frame_sha256"):
        problems.append(
            "当事人证书中没有人脸核验记录 / the party's certificate carries no face-match verdict"
        )
        return
    if event.get("field") != sig.field_name:
        problems.append(
            "当事人证书是为另一个签名位置签发的 / the party's certificate was "
            "issued for another signature field"
        )
    if event.get("document_sha256") not in _prefix_hashes(pdf):
        problems.append(
            "当事人证书是为另一份文书签发的（文书哈希不符）/ the party's certificate "
            "was issued for another document (hash mismatch)"
        )
    mark, signed_event = read_party_attrs(sig.signer_info)
    if signed_event is not None and signed_event != event:
        problems.append(
            "签名属性中的核验记录与证书不符 / the signed verdict differs from the certificate's"
        )
    if mark is None:
        problems.append("签名中没有手写笔迹数据 / the signature carries no handwritten mark data")
    else:
        rep.mark_sha256 = hashlib.sha256(mark).hexdigest()
        if rep.mark_sha256 != event.get("mark_sha256"):
            problems.append(
                "手写笔迹数据与证书中的哈希不符 / the mark data does not match the "
                "certificate's hash"
            )


def extract_marks(pdf: bytes) -> dict[str, bytes]:
    """The stroke data (canonical JSON) of every party signature, by field name."""
    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    out = {}
    for sig in reader.embedded_regular_signatures:
        mark, _ = read_party_attrs(sig.signer_info)
        if mark is not None:
            out[sig.field_name] = mark
    return out


def _check_signature(
    sig: Any,
    reader: PdfFileReader,
    roots: list[asn1_x509.Certificate],
    extra_crls: list[asn1_crl.CertificateList],
    dss: DocumentSecurityStore | None,
    final_pages: int,
    slot: dict[str, Any] | None,
    pdf: bytes,
) -> SignatureReport:
    cert = sig.signer_cert
    signer = cert.subject.human_friendly
    rep = SignatureReport(
        sig.field_name,
        signer,
        slot["role"] if slot else None,
        None,
        False,
        serial=format(cert.serial_number, "x"),
    )
    problems = rep.problems
    # The timestamp fixes when it was signed; validate the chain at that moment.
    ts_time = _timestamp_time(sig)
    tst = ts_time
    if ts_time is None:
        problems.append("缺少 RFC 3161 时间戳 / no RFC 3161 timestamp")
    rep.signed_at = ts_time

    def context(moment: datetime | None) -> ValidationContext:
        kwargs: dict[str, Any] = {
            "trust_roots": roots,
            "allow_fetching": False,
            "revocation_mode": "require",
            "crls": list(extra_crls),
            "retroactive_revinfo": True,
        }
        if moment is not None:
            kwargs["moment"] = moment
        if dss is not None:
            return dss.as_validation_context(kwargs)
        return ValidationContext(**kwargs)

    try:
        status = asyncio.run(
            async_validate_pdf_signature(
                sig, signer_validation_context=context(ts_time), ts_validation_context=context(None)
            )
        )
    except Exception as exc:
        problems.append(f"签名无法验证：{exc} / the signature cannot be validated: {exc}")
        return rep
    if not status.intact:
        problems.append(
            "签名后文件内容被改动（摘要不符）/ the signed bytes changed after signing "
            "(digest mismatch)"
        )
    elif not status.valid:
        problems.append("签名值无效 / the signature value is invalid")
    if not status.trusted:
        problems.append(_cert_problem_zh(status))
    if tst is not None:
        tsv = status.timestamp_validity
        if tsv is None or not tsv.intact or not tsv.valid:
            problems.append("时间戳无效 / the timestamp is invalid")
        elif not tsv.trusted:
            problems.append(
                "时间戳机构的证书不是由给定的根证书签发 / the time-stamp authority is "
                "not certified by the given root"
            )
    level = status.modification_level
    if (
        level is not None and level.value > ModificationLevel.FORM_FILLING.value
    ) or status.docmdp_ok is False:
        problems.append(
            f"签名后文档被修改（{getattr(level, 'name', level)}），不只是追加签名 / "
            "the document was changed after signing beyond adding signatures"
        )
    elif status.coverage is not None and status.coverage.name not in (
        "ENTIRE_FILE",
        "ENTIRE_REVISION",
    ):
        problems.append("签名未覆盖整个修订版本 / the signature does not cover its revision")
    try:
        signed_pages = _pages(reader, sig.signed_revision)
        if final_pages > signed_pages:
            problems.append(
                f"签名后新增了页面（签名时 {signed_pages} 页，现在 {final_pages} 页）/ "
                f"pages were added after signing ({signed_pages} -> {final_pages})"
            )
    except Exception:
        problems.append("无法确定签名时的页数 / cannot tell the page count at signing")
    if slot is not None and not signer_matches(
        slot["role"], slot["signer_id"], x509.load_der_x509_certificate(cert.dump())
    ):
        problems.append(
            f"签名人不是该位置要求的{slot['label']} {slot['name']} / the signer is not "
            f"the one this field requires ({slot['role']} {slot['signer_id']})"
        )
    if slot is not None and slot["role"] == "party":
        _check_party(sig, cert, rep, pdf)
    rep.ok = not problems
    return rep
