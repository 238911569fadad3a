"""Signing and offline validation of documents: real PDFs, real keys, real CMS, a real RFC 3161
timestamp, checked by the project's verifier and by pyhanko's own command line.

The party's key stands in for the browser: it is made here with cryptography's ECDSA P-256 and
its signature is turned into r || s (IEEE P1363), exactly what WebCrypto's
``crypto.subtle.sign({name: "ECDSA", hash: "SHA-256"}, key, data)`` returns; the library must
convert it to DER itself. The private key never reaches the library: only the public key (SPKI,
as ``exportKey("spki")``) and the signature value do.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader

from documents import CAError, SigningError, load_templates, render
from documents.appearance import (
    mark_image,
    name_card,
    parse_strokes,
    strokes_json,
    strokes_sha256,
)
from documents.ca import DeploymentCA, FaceVerdict, signing_event
from documents.samples import sample
from documents.seal import draw_seal
from documents.signing import (
    SigningSetup,
    builtin_signer,
    finish_party_signing,
    p1363_to_der,
    prepare_party_signing,
    sign_document,
)
from documents.verify import document_state, extract_marks, verify_pdf

TEMPLATES = load_templates()
STROKES = [[[0, 0], [12, 8], [24, 0], [30, 10]], [[4, 14], [26, 14]], [[15, 2], [15, 22]]]


class Browser:
    """Stands in for the party's browser: a non-extractable P-256 key, signing like WebCrypto."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def spki(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        der = self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # r || s, as WebCrypto


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SigningSetup:
    return SigningSetup(DeploymentCA(tmp_path_factory.mktemp("keys")))


def verdict(vid: str = "verdict-1", age: float = 5, matched: bool = True) -> FaceVerdict:
    return FaceVerdict(
        vid,
        hashlib.sha256(vid.encode()).hexdigest(),
        matched,
        datetime.now(UTC) - timedelta(seconds=age),
    )


def party_sign(
    pdf: bytes,
    field: str,
    setup: SigningSetup,
    party_id: str,
    name: str,
    browser: Browser | None = None,
    face: FaceVerdict | None = None,
) -> bytes:
    """The whole party flow: face verdict -> certificate -> digest -> browser signs -> embed."""
    browser = browser or Browser()
    strokes = parse_strokes(STROKES)
    cert = setup.ca.issue_party(
        browser.spki(),
        party_id,
        name,
        face or verdict(),
        hashlib.sha256(pdf).hexdigest(),
        field,
        strokes_sha256(strokes),
    )
    pending = prepare_party_signing(
        pdf, field, cert, setup, mark_image(strokes, name), mark=strokes_json(strokes)
    )
    return finish_party_signing(pending, browser.sign(pending.to_be_signed), setup)


def officer_sign(pdf: bytes, field: str, setup: SigningSetup, oid: str, name: str) -> bytes:
    signer = builtin_signer(setup, "officer", officer_id=oid, name=name, department="某大队")
    return sign_document(pdf, field, signer, setup, name_card([name, "民警"]))


def seal_sign(pdf: bytes, setup: SigningSetup) -> bytes:
    dep = "某市公安局交通警察支队一大队"
    signer = builtin_signer(setup, "seal", brigade="B01", department=dep)
    return sign_document(pdf, "seal-department", signer, setup, draw_seal(dep))


def root(setup: SigningSetup) -> list[x509.Certificate]:
    return [setup.ca.root]


def pyhanko_cli_ok(pdf: bytes, root_pem: Path, tmp: Path) -> bool:
    """pyhanko's own command line, AdES validation with the trust root only (offline)."""
    exe = Path(sys.executable).with_name("pyhanko")
    cmd = [str(exe)] if exe.exists() else [shutil.which("pyhanko") or "pyhanko"]
    target = tmp / "check.pdf"
    target.write_bytes(pdf)
    result = subprocess.run(
        [
            *cmd,
            "sign",
            "adesverify",
            "--trust",
            str(root_pem),
            "--trust-replace",
            "--executive-summary",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode == 0 and "INVALID" not in result.stdout


@pytest.fixture(scope="module")
def signed_record(setup: SigningSetup) -> bytes:
    doc = render(TEMPLATES["inquiry_record"], sample("inquiry_record"), "询〔2026〕第0001号")
    pdf = party_sign(doc.pdf, "party-p1-p1", setup, "p1", "张三")
    pdf = officer_sign(pdf, "officer-o1", setup, "o1", "王警官")
    return officer_sign(pdf, "officer-o2", setup, "o2", "李警官")


def test_record_signed_by_party_key_after_face_match_and_by_officers(
    setup: SigningSetup, signed_record: bytes, tmp_path: Path
) -> None:
    report = verify_pdf(signed_record, root(setup))
    assert report.ok, report.problems
    assert report.state is not None and report.state.effective
    assert [s.field for s in report.signatures] == ["party-p1-p1", "officer-o1", "officer-o2"]
    assert all(s.signed_at is not None for s in report.signatures)
    event = report.signatures[0].signing_event
    assert event is not None and event["verdict_id"] == "verdict-1"
    assert event["frame_sha256"] == hashlib.sha256(b"verdict-1").hexdigest()
    assert event["mark_sha256"] == strokes_sha256(parse_strokes(STROKES))
    # the stroke data itself is in the PDF, signed by the party's own key
    assert report.signatures[0].mark_sha256 == event["mark_sha256"]
    assert extract_marks(signed_record) == {"party-p1-p1": strokes_json(parse_strokes(STROKES))}
    # B-LT: the chain and the CRL are in the document's DSS
    reader = PdfFileReader(io.BytesIO(signed_record))
    dss = reader.root["/DSS"]
    assert len(dss["/Certs"]) >= 3 and len(dss["/CRLs"]) >= 1
    # the independent second opinion agrees
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(setup.ca.root_pem)
    assert pyhanko_cli_ok(signed_record, root_pem, tmp_path)


def test_party_key_never_reaches_the_library_and_a_wrong_signature_is_refused(
    setup: SigningSetup,
) -> None:
    doc = render(TEMPLATES["delivery_consent"], sample("delivery_consent"), "送〔2026〕第0001号")
    browser, other = Browser(), Browser()
    strokes = parse_strokes(STROKES)
    cert = setup.ca.issue_party(
        browser.spki(),
        "p1",
        "张三",
        verdict(),
        hashlib.sha256(doc.pdf).hexdigest(),
        "party-p1",
        strokes_sha256(strokes),
    )
    with pytest.raises(SigningError, match="另一个版本"):
        prepare_party_signing(doc.pdf + b"\n", "party-p1", cert, setup)
    other_field = setup.ca.issue_party(
        browser.spki(),
        "p1",
        "张三",
        verdict(),
        hashlib.sha256(doc.pdf).hexdigest(),
        "party-p9",
        strokes_sha256(strokes),
    )
    with pytest.raises(SigningError, match="不是为签名位置 party-p1"):
        prepare_party_signing(doc.pdf, "party-p1", other_field, setup)
    with pytest.raises(SigningError, match="笔迹与证书"):
        prepare_party_signing(doc.pdf, "party-p1", cert, setup, mark=b"{}")
    pending = prepare_party_signing(doc.pdf, "party-p1", cert, setup, mark_image(strokes))
    with pytest.raises(SigningError, match="签名值与证书不符"):
        finish_party_signing(pending, other.sign(pending.to_be_signed), setup)
    with pytest.raises(SigningError, match="64 字节"):
        p1363_to_der(b"\x01" * 63)
    assert signing_event(cert) is not None and signing_event(setup.ca.root) is None


def test_no_certificate_without_a_recent_face_match(setup: SigningSetup) -> None:
    spki = Browser().spki()
    args = ("p1", "张三")
    rest = ("0" * 64, "party-p1", "1" * 64)
    with pytest.raises(CAError, match="人脸核验未通过"):
        setup.ca.issue_party(spki, *args, verdict(matched=False), *rest)
    with pytest.raises(CAError, match="已过期"):
        setup.ca.issue_party(spki, *args, verdict(age=3600), *rest)
    with pytest.raises(CAError, match="P-256"):
        rsa_spki = (
            setup.ca.tsa()
            .cert.public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        setup.ca.issue_party(rsa_spki, *args, verdict(), *rest)


def test_determination_signed_by_officer_and_seal(setup: SigningSetup, tmp_path: Path) -> None:
    doc = render(
        TEMPLATES["determination_ordinary"],
        sample("determination_ordinary"),
        "某公交认〔2026〕第0001号",
    )
    pdf = officer_sign(doc.pdf, "officer-o1", setup, "o1", "王警官")
    half = verify_pdf(pdf, root(setup))
    assert not half.ok and half.state is not None and not half.state.effective
    assert [m["field"] for m in half.state.missing] == ["seal-department"]
    assert any("缺少必需的签名：交通事故处理专用章" in p for p in half.problems)
    pdf = seal_sign(pdf, setup)
    report = verify_pdf(pdf, root(setup))
    assert report.ok, report.problems
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(setup.ca.root_pem)
    assert pyhanko_cli_ok(pdf, root_pem, tmp_path)


def test_mediation_agreement_takes_effect_only_with_the_last_signature(setup: SigningSetup) -> None:
    data = sample("mediation_agreement")
    data["parties"] = data["parties"][:2]
    t = TEMPLATES["mediation_agreement"]
    pdf = render(t, data, "调〔2026〕第0001号").pdf
    order = ["party-p1", "party-p2", "officer-o1"]
    assert [m["field"] for m in document_state(pdf).missing] == order
    pdf = party_sign(pdf, "party-p1", setup, "p1", "张三", face=verdict("v-p1"))
    assert not document_state(pdf).effective
    pdf = party_sign(pdf, "party-p2", setup, "p2", "李四", face=verdict("v-p2"))
    state = document_state(pdf)
    assert not state.effective and [m["name"] for m in state.missing] == ["王警官"]
    pdf = officer_sign(pdf, "officer-o1", setup, "o1", "王警官")
    assert document_state(pdf).effective
    report = verify_pdf(pdf, root(setup))
    assert report.ok, report.problems
    assert (
        [
            s.signing_event["verdict_id"]  # type: ignore[index]
            for s in report.signatures[:2]
        ]
        == ["v-p1", "v-p2"]
    )


def test_signing_refusals(setup: SigningSetup, signed_record: bytes) -> None:
    doc = render(TEMPLATES["penalty_notice"], sample("penalty_notice"), "告〔2026〕第0001号")
    with pytest.raises(SigningError, match="没有签名位置"):
        officer_sign(doc.pdf, "officer-o9", setup, "o9", "赵警官")
    with pytest.raises(SigningError, match="属于 party"):
        officer_sign(doc.pdf, "party-p1", setup, "o1", "王警官")
    with pytest.raises(SigningError, match="已签名"):
        officer_sign(signed_record, "officer-o1", setup, "o1", "王警官")
    # another officer of the same CA cannot sign o1's box
    with pytest.raises(SigningError, match="签名证书不是告知人 王警官的"):
        officer_sign(doc.pdf, "officer-o1", setup, "o2", "李警官")
    data = sample("penalty_notice")
    data["refusals"] = [{"signer_id": "p1", "name": "张三", "reason": "不认可", "time": "10:00"}]
    refused = render(TEMPLATES["penalty_notice"], data, "告〔2026〕第0002号").pdf
    with pytest.raises(SigningError, match="已拒绝签名"):
        party_sign(refused, "party-p1", setup, "p1", "张三")
    # a refusal does not block: the officer's signature makes it complete
    done = officer_sign(refused, "officer-o1", setup, "o1", "王警官")
    state = document_state(done)
    assert state.effective and state.refused == ["party-p1"]
    assert verify_pdf(done, root(setup)).ok


def _flip_in_signed_content(pdf: bytes) -> bytes:
    # a byte inside the first revision's page content: covered by every signature
    i = pdf.index(b"stream\n", pdf.index(b"/Contents")) + 40
    return pdf[:i] + bytes([pdf[i] ^ 0x01]) + pdf[i + 1 :]


def test_flipped_byte_is_named(setup: SigningSetup, signed_record: bytes, tmp_path: Path) -> None:
    bad = _flip_in_signed_content(signed_record)
    report = verify_pdf(bad, root(setup))
    assert not report.ok
    assert all(not s.ok for s in report.signatures)
    assert any("签名后文件内容被改动" in p for p in report.problems), report.problems
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(setup.ca.root_pem)
    assert not pyhanko_cli_ok(bad, root_pem, tmp_path)


def test_page_added_after_signing_is_named(
    setup: SigningSetup, signed_record: bytes, tmp_path: Path
) -> None:
    w = IncrementalPdfFileWriter(io.BytesIO(signed_record))
    from pyhanko.pdf_utils import generic

    page = generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Page"),
            generic.pdf_name("/MediaBox"): generic.ArrayObject(
                [generic.NumberObject(v) for v in (0, 0, 595, 842)]
            ),
            generic.pdf_name("/Resources"): generic.DictionaryObject(),
        }
    )
    w.insert_page(page)
    out = io.BytesIO()
    w.write(out)
    report = verify_pdf(out.getvalue(), root(setup))
    assert not report.ok
    assert any("签名后新增了页面" in p for p in report.problems), report.problems
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(setup.ca.root_pem)
    assert not pyhanko_cli_ok(out.getvalue(), root_pem, tmp_path)


def test_foreign_certificate_is_named(setup: SigningSetup, tmp_path: Path) -> None:
    foreign = SigningSetup(DeploymentCA(tmp_path / "foreign", organisation="他处部署"))
    doc = render(TEMPLATES["determination_ordinary"], sample("determination_ordinary"), "认")
    pdf = officer_sign(doc.pdf, "officer-o1", foreign, "o1", "冒名者")
    pdf = seal_sign(pdf, setup)
    report = verify_pdf(pdf, root(setup))
    assert not report.ok
    assert report.signatures[0].problems[0].startswith("签名证书不是由给定的根证书签发")
    assert report.signatures[1].ok
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(setup.ca.root_pem)
    assert not pyhanko_cli_ok(pdf, root_pem, tmp_path)


def test_revoked_certificate(tmp_path: Path) -> None:
    setup = SigningSetup(DeploymentCA(tmp_path / "keys"))
    doc = render(TEMPLATES["determination_ordinary"], sample("determination_ordinary"), "认")
    cred = setup.ca.officer("o1", "王警官", "某大队")
    pdf = officer_sign(doc.pdf, "officer-o1", setup, "o1", "王警官")
    # revoked after it signed: the signature stays valid (point-in-time, fixed by the timestamp;
    # a CRL keeps whole seconds, so the revocation is dated a minute on)
    setup.ca.revoke(
        cred.cert.serial_number, "superseded", at=datetime.now(UTC) + timedelta(minutes=1)
    )
    later = verify_pdf(pdf, root(setup), crls=[setup.ca.crl()])
    assert later.signatures[0].ok, later.signatures[0].problems
    # the library refuses to sign with a revoked certificate
    from documents.signing import KeyFileSigner

    with pytest.raises(SigningError, match="已吊销"):
        sign_document(doc.pdf, "officer-o1", KeyFileSigner(cred, setup.ca.root, "officer"), setup)
    # a key that was compromised before it signed: its signature is named as revoked
    cred2 = setup.ca.officer("o1", "王警官", "某大队")  # a new key: the old one is revoked
    assert cred2.cert.serial_number != cred.cert.serial_number
    pdf2 = sign_document(
        doc.pdf, "officer-o1", KeyFileSigner(cred2, setup.ca.root, "officer"), setup
    )
    setup.ca.revoke(
        cred2.cert.serial_number, "key_compromise", at=datetime.now(UTC) - timedelta(hours=1)
    )
    report = verify_pdf(pdf2, root(setup), crls=[setup.ca.crl()])
    assert not report.ok
    assert any("已被吊销" in p for p in report.signatures[0].problems), report.problems
    assert (tmp_path / "keys" / "crl.der").exists()
    crl = x509.load_der_x509_crl((tmp_path / "keys" / "crl.der").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cred2.cert.serial_number) is not None
    with pytest.raises(CAError, match="未签发"):
        setup.ca.revoke(12345)
    # keys and the list of issued certificates are private; the root and the CRL are published
    for f in (tmp_path / "keys").iterdir():
        expected = 0o644 if f.name in ("ca-root.pem", "crl.der") else 0o600
        assert f.stat().st_mode & 0o777 == expected, f.name


def test_signature_without_timestamp_is_named(setup: SigningSetup) -> None:
    from pyhanko.sign import fields, signers

    doc = render(TEMPLATES["delivery_consent"], sample("delivery_consent"), "送")
    # signed straight with pyhanko, past the library's checks: no timestamp, and by officer o2
    # in officer o1's box
    cred = setup.ca.officer("o2", "李警官", "某大队")
    signer = signers.SimpleSigner(
        signing_cert=cred.cert_asn1(),
        signing_key=cred.key_asn1(),
        cert_registry=None,  # type: ignore[arg-type]
    )
    out = io.BytesIO()
    signers.PdfSigner(
        signers.PdfSignatureMetadata(
            field_name="officer-o1", subfilter=fields.SigSeedSubFilter.PADES
        ),
        signer=signer,
        new_field_spec=fields.SigFieldSpec("officer-o1", box=(10, 10, 100, 50)),
    ).sign_pdf(IncrementalPdfFileWriter(io.BytesIO(doc.pdf)), output=out)
    report = verify_pdf(out.getvalue(), root(setup))
    assert any("缺少 RFC 3161 时间戳" in p for p in report.signatures[0].problems)
    assert any("签名人不是该位置要求的承办民警 王警官" in p for p in report.signatures[0].problems)
    assert any("缺少必需的签名：受送达人" in p for p in report.problems)


def test_unsigned_or_foreign_pdf(setup: SigningSetup) -> None:
    report = verify_pdf(b"%PDF-1.7 not really", root(setup))
    assert not report.ok and "无法解析" in report.problems[0]
    doc = render(TEMPLATES["talk_record"], sample("talk_record"), "谈")
    report = verify_pdf(doc.pdf, [])
    assert any("未指定根证书" in p for p in report.problems)
    assert sum("缺少必需的签名" in p for p in report.problems) == 3


def test_ca_refuses_a_root_key_others_can_read(tmp_path: Path) -> None:
    DeploymentCA(tmp_path / "keys")
    (tmp_path / "keys" / "ca-root.key").chmod(0o644)
    with pytest.raises(CAError, match="0600"):
        DeploymentCA(tmp_path / "keys")


def test_external_tsa_over_http(setup: SigningSetup, tmp_path: Path) -> None:
    """An external RFC 3161 authority by URL: here the built-in one served over HTTP on
    127.0.0.1 (the responder function of documents/tsa.py behind a stdlib server)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from asn1crypto import tsp

    from documents.tsa import respond

    seen: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(len(body))
            answer = respond(setup.ca, body)
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tsa"
        external = SigningSetup(setup.ca, tsa_url=url)
        doc = render(TEMPLATES["delivery_consent"], sample("delivery_consent"), "送")
        signer = builtin_signer(
            external, "officer", officer_id="o1", name="王警官", department="某大队"
        )
        pdf = sign_document(doc.pdf, "officer-o1", signer, external)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert seen, "the signer did not ask the TSA"
    report = verify_pdf(pdf, root(setup))
    assert report.signatures[0].ok, report.signatures[0].problems

    # malformed requests and weak hashes are refused in RFC 3161 terms
    def status(answer: bytes) -> tsp.PKIStatusInfo:
        # a rejection has no token, which asn1crypto's TimeStampResp insists on: read the status
        assert answer[0] == 0x30
        return tsp.PKIStatusInfo.load(answer[2:])

    assert status(respond(setup.ca, b"\x30\x03junk"))["status"].native == "rejection"
    sha1_req = tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha1"},
                "hashed_message": b"\x00" * 20,
            },
        }
    )
    assert status(respond(setup.ca, sha1_req.dump()))["fail_info"].native == {"bad_alg"}


def test_party_signs_every_page_of_a_long_record(setup: SigningSetup) -> None:
    data = sample("inquiry_record")
    data["turns"] = [
        {"q": f"第{i}个问题？", "a": "回答。" * 40, "time": f"09:{i:02d}:00", "offset": 60 * i}
        for i in range(10)
    ]
    doc = render(TEMPLATES["inquiry_record"], data, "询〔2026〕第0009号")
    pages = doc.manifest["pages"]
    assert pages >= 2
    browser = Browser()  # one key in the browser; one short certificate per page
    pdf = party_sign(doc.pdf, "party-p1-p1", setup, "p1", "张三", browser)
    missing = [m["field"] for m in document_state(pdf).missing]
    assert missing == ["officer-o1", "officer-o2", *(f"party-p1-p{n}" for n in range(2, pages + 1))]
    for n in range(2, pages + 1):
        pdf = party_sign(pdf, f"party-p1-p{n}", setup, "p1", "张三", browser)
    pdf = officer_sign(pdf, "officer-o1", setup, "o1", "王警官")
    pdf = officer_sign(pdf, "officer-o2", setup, "o2", "李警官")
    report = verify_pdf(pdf, root(setup))
    assert report.ok, report.problems
    reader = PdfFileReader(io.BytesIO(pdf))
    pages_of = {s.field_name: s.sig_field["/P"].get_object() for s in reader.embedded_signatures}
    page_objs = [reader.root["/Pages"]["/Kids"][i].get_object() for i in range(pages)]
    assert pages_of["party-p1-p1"] == page_objs[0] and pages_of["party-p1-p2"] == page_objs[1]


def _issue_many(keys: str, start: int) -> None:
    ca = DeploymentCA(Path(keys))
    for i in range(start, start + 8):
        ca.officer(f"o{i}", f"警官{i}", "某大队")
        ca.seal("B01", "某大队")  # both processes want the same seal key at once


def test_two_processes_share_one_ca(tmp_path: Path) -> None:
    import json
    import multiprocessing

    keys = tmp_path / "keys"
    DeploymentCA(keys)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_issue_many, args=(str(keys), start)) for start in (0, 100)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    issued = json.loads((keys / "ca-state.json").read_text())["issued"].values()
    officers = sorted(v["what"] for v in issued if v["what"].startswith("officer"))
    assert len(officers) == 16
    assert sum(v["what"] == "seal B01" for v in issued) == 1  # made once, then reused


def test_certificate_expired_at_signing_time_is_named(setup: SigningSetup) -> None:
    """A party certificate that had run out when the timestamp was taken (signed straight with
    pyhanko, past the library, which would refuse it)."""
    from pyhanko.sign import fields, signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    from documents.ca import to_asn1

    doc = render(TEMPLATES["delivery_consent"], sample("delivery_consent"), "送")
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    past = datetime.now(UTC) - timedelta(hours=2)
    face = FaceVerdict("v-old", "ab" * 32, True, past)
    cert = setup.ca.issue_party(
        spki,
        "p1",
        "张三",
        face,
        hashlib.sha256(doc.pdf).hexdigest(),
        "party-p1",
        "cd" * 32,
        now=past,
    )
    key_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    from asn1crypto import keys as asn1_keys

    signer = signers.SimpleSigner(
        signing_cert=to_asn1(cert),
        signing_key=asn1_keys.PrivateKeyInfo.load(key_der),
        cert_registry=SimpleCertificateStore.from_certs([to_asn1(setup.ca.root)]),
    )
    out = io.BytesIO()
    signers.PdfSigner(
        signers.PdfSignatureMetadata(
            field_name="party-p1", subfilter=fields.SigSeedSubFilter.PADES
        ),
        signer=signer,
        timestamper=setup.timestamper(),
        new_field_spec=fields.SigFieldSpec("party-p1", box=(10, 10, 100, 50)),
    ).sign_pdf(IncrementalPdfFileWriter(io.BytesIO(doc.pdf)), output=out)
    report = verify_pdf(out.getvalue(), root(setup), crls=[setup.ca.crl()])
    problems = report.signatures[0].problems
    assert any("签名时证书不在有效期内" in p for p in problems), problems


def test_builtin_tsa_token_carries_this_deployments_policy(setup: SigningSetup) -> None:
    """documents/signing.py overrides a private method of pyhanko's time-stamper (pinned in
    pyproject): this fails if an upgrade moves it."""
    from asn1crypto import algos, tsp

    from documents.signing import TSA_POLICY

    req = tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": {
                "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                "hashed_message": hashlib.sha256(b"x").digest(),
            },
            "nonce": 7,
            "cert_req": True,
        }
    )
    resp = setup.timestamper().request_tsa_response(req)  # type: ignore[attr-defined]
    info = resp["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
    assert info["policy"].dotted == TSA_POLICY and info["nonce"].native == 7


def test_a_prepared_signature_resumes_from_its_state_in_another_process(tmp_path: Path) -> None:
    """What a worker keeps in the database is enough for another one (a new CA object over the
    same keys directory, as another process has) to finish the signature."""
    import json

    from documents.signing import resume_party_signing

    keys = tmp_path / "keys"
    first = SigningSetup(DeploymentCA(keys))
    doc = render(TEMPLATES["delivery_consent"], sample("delivery_consent"), "送〔2026〕第0001号")
    browser = Browser()
    strokes = parse_strokes(STROKES)
    cert = first.ca.issue_party(
        browser.spki(),
        "p1",
        "张三",
        verdict(),
        hashlib.sha256(doc.pdf).hexdigest(),
        "party-p1",
        strokes_sha256(strokes),
    )
    pending = prepare_party_signing(
        doc.pdf, "party-p1", cert, first, mark_image(strokes, "张三"), mark=strokes_json(strokes)
    )
    state = json.loads(json.dumps(pending.state(doc.pdf)))
    with pytest.raises(SigningError, match="不在该文书版本之上"):
        pending.state(doc.pdf + b"\n")
    other = SigningSetup(DeploymentCA(keys))
    with pytest.raises(SigningError, match="无法恢复"):
        resume_party_signing(state, doc.pdf + b"\n", other)  # another revision
    with pytest.raises(SigningError, match="无法恢复"):
        resume_party_signing({**state, "update": "AAAA"}, doc.pdf, other)
    resumed = resume_party_signing(state, doc.pdf, other)
    assert resumed.to_be_signed == pending.to_be_signed
    signed = finish_party_signing(resumed, browser.sign(resumed.to_be_signed), other)
    report = verify_pdf(signed, [other.ca.root])
    (sig,) = report.signatures
    assert sig.ok and sig.role == "party", sig.problems
    assert extract_marks(signed)["party-p1"] == strokes_json(strokes)
    assert report.state is not None
    assert [m["field"] for m in report.state.missing] == ["officer-o1"]
