"""The built-in time-stamp authority as an RFC 3161 responder: DER request in, DER response out.

Signing in this deployment asks it in-process (``SigningSetup`` without ``tsa_url``). This
function is for serving it to others over HTTP (``Content-Type: application/timestamp-query``
in, ``application/timestamp-reply`` out, RFC 3161 section 3.4): the transport is the caller's.
"""

from __future__ import annotations

from asn1crypto import tsp

from .ca import CertificateAuthority

ALLOWED_HASHES = {"sha256", "sha384", "sha512"}
MAX_REQUEST = 16 * 1024


def _reject(fail: str) -> bytes:
    # TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken OPTIONAL }: asn1crypto
    # does not mark the token optional, so the SEQUENCE is written here
    status = bytes(
        tsp.PKIStatusInfo(
            {"status": tsp.PKIStatus("rejection"), "fail_info": tsp.PKIFailureInfo({fail})}
        ).dump()
    )
    n = len(status)
    length = bytes([n]) if n < 0x80 else bytes([0x81, n])
    return b"\x30" + length + status


def respond(ca: CertificateAuthority, request_der: bytes) -> bytes:
    """A TimeStampResp for a TimeStampReq; a malformed request or a weak hash is rejected with
    the RFC's failure codes, never an exception."""
    from .signing import SigningSetup

    if len(request_der) > MAX_REQUEST:
        return _reject("bad_request")
    try:
        req = tsp.TimeStampReq.load(request_der)
        algo = req["message_imprint"]["hash_algorithm"]["algorithm"].native
        digest = req["message_imprint"]["hashed_message"].native
        _ = req.native  # parse all of it now: a malformed tail must not fail later
    except (ValueError, TypeError, KeyError):
        return _reject("bad_data_format")
    if algo not in ALLOWED_HASHES:
        return _reject("bad_alg")
    if not isinstance(digest, bytes) or len(digest) * 8 != int(algo[3:]):
        return _reject("bad_data_format")
    stamper = SigningSetup(ca).timestamper()
    return bytes(stamper.request_tsa_response(req).dump())  # type: ignore[attr-defined]
