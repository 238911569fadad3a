"""``remotecase documents ...`` as an operator or a court's expert runs it, and the PKCS#11 signer
on Debian's SoftHSM (a key that never leaves the token)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from documents import load_templates, render
from documents.ca import DeploymentCA
from documents.samples import sample
from documents.signing import Pkcs11Provider, SigningSetup, sign_document
from documents.verify import verify_pdf

ROOT = Path(__file__).parents[1]
SOFTHSM_LIBS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
)


def process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command, in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "control.cli", "documents", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The same command line through control.cli.main in this process (each process start
    costs a second of imports)."""
    import contextlib
    import io

    from control.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(["documents", *args])
            except SystemExit as exc:
                rc = int(exc.code or 0)
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())


def test_render_sign_verify_from_the_command_line(tmp_path: Path) -> None:
    r = process("templates", cwd=tmp_path)
    kinds = len(list((Path(__file__).parent.parent / "documents" / "templates").glob("*.toml")))
    assert r.returncode == 0 and f"templates OK ({kinds} kinds)" in r.stdout, r.stdout
    r = cli(
        "render",
        "determination_ordinary",
        "--sample",
        "--out",
        "d.pdf",
        "--numbers",
        "n.db",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "某公交认〔2026〕第0001号" in r.stdout and "seal-department" in r.stdout
    # refused data takes no number
    bad = sample("determination_ordinary")
    del bad["parties"][0]["responsibility"]
    (tmp_path / "bad.json").write_text(json.dumps(bad, ensure_ascii=False))
    r = cli(
        "render",
        "determination_ordinary",
        "bad.json",
        "--out",
        "x.pdf",
        "--numbers",
        "n.db",
        cwd=tmp_path,
    )
    assert r.returncode == 1 and "第1项的当事人责任" in r.stderr
    assert not (tmp_path / "x.pdf").exists()
    r = cli(
        "number",
        "list",
        "--numbers",
        "n.db",
        "--brigade",
        "B01",
        "--kind",
        "determination_ordinary",
        "--year",
        "2026",
        cwd=tmp_path,
    )
    assert r.stdout.count("taken") == 1
    keys = ["--keys", "keys"]
    r = cli(
        "sign",
        "d.pdf",
        "--out",
        "d1.pdf",
        "--field",
        "officer-o1",
        "--role",
        "officer",
        "--officer-id",
        "o1",
        "--name",
        "王警官",
        "--department",
        "某大队",
        *keys,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    r = cli("ca", *keys, "root", "--out", "root.pem", cwd=tmp_path)
    assert r.returncode == 0
    r = cli("verify", "d1.pdf", "--trust", "root.pem", cwd=tmp_path)
    assert r.returncode == 1 and "缺少必需的签名：交通事故处理专用章" in r.stdout
    r = cli(
        "sign",
        "d1.pdf",
        "--out",
        "d2.pdf",
        "--field",
        "seal-department",
        "--role",
        "seal",
        "--brigade",
        "B01",
        "--department",
        "某市公安局交通警察支队一大队",
        *keys,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    r = process("verify", "d2.pdf", "--trust", "root.pem", cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    assert "验证通过" in r.stdout and "生效 / in effect: 是" in r.stdout
    r = cli("verify", "d2.pdf", "--trust", "root.pem", "--json", cwd=tmp_path)
    report = json.loads(r.stdout)
    assert report["ok"] and report["state"]["effective"]
    # without the root nothing is trusted, and the command says why
    r = cli("verify", "d2.pdf", cwd=tmp_path)
    assert r.returncode == 1 and "未指定根证书" in r.stdout
    # revoking the seal certificate publishes a CRL naming it in the keys directory
    serial = report["signatures"][1]["serial"]
    r = cli("ca", *keys, "revoke", serial, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    crl = x509.load_der_x509_crl((tmp_path / "keys" / "crl.der").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    r = cli("ca", *keys, "revoke", "abc123", cwd=tmp_path)
    assert r.returncode == 1 and "未签发" in r.stderr
    r = cli("state", "d1.pdf", cwd=tmp_path)
    assert json.loads(r.stdout)["missing"][0]["field"] == "seal-department"
    r = cli(
        "sign",
        "d2.pdf",
        "--out",
        "d2.pdf",
        "--field",
        "officer-o1",
        "--role",
        "officer",
        "--officer-id",
        "o1",
        "--name",
        "王警官",
        "--department",
        "某大队",
        *keys,
        cwd=tmp_path,
    )
    assert r.returncode == 1 and "已签名" in r.stderr


def _softhsm() -> str | None:
    if shutil.which("softhsm2-util") is None:
        return None
    return next((p for p in SOFTHSM_LIBS if Path(p).exists()), None)


@pytest.mark.skipif(
    _softhsm() is None, reason="Debian's softhsm2 is not installed (.ci/run installs it)"
)
def test_officer_key_on_a_pkcs11_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pkcs11
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    lib = _softhsm()
    assert lib is not None
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "remotecase",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    token = pkcs11.lib(lib).get_token(token_label="remotecase")
    with token.open(rw=True, user_pin="1234") as session:
        params = session.create_domain_parameters(
            pkcs11.KeyType.EC,
            {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        pub, _ = params.generate_keypair(store=True, label="officer-o1")
        spki = encode_ec_public_key(pub)
    ca = DeploymentCA(tmp_path / "keys")
    public_key = serialization.load_der_public_key(spki)
    cert = ca.certify_key(public_key, "officer", "o1", "王警官", "某大队")  # type: ignore[arg-type]
    setup = SigningSetup(ca)
    provider = Pkcs11Provider(lib, "remotecase", "1234", "officer-o1", cert, ca.root, "officer")
    doc = render(load_templates()["delivery_consent"], sample("delivery_consent"), "送")
    try:
        pdf = sign_document(doc.pdf, "officer-o1", provider, setup)
    finally:
        provider.close()
        provider.close()
    report = verify_pdf(pdf, [ca.root])
    assert report.signatures[0].ok, report.signatures[0].problems
    assert "王警官（o1）" in report.signatures[0].signer
    # no private key of that officer exists outside the token
    assert not list((tmp_path / "keys").glob("officer-*.key"))
