"""Checks on remote SDP before aiortc sees it.

aiortc accepts an SDP without ``a=fingerprint`` and then hangs in ``connecting`` forever, and
raises assorted exceptions on garbage; the SFU turns all of that into one error type with a code
the signalling layer can send back.
"""

from __future__ import annotations

MAX_SDP_BYTES = 32 * 1024


class SdpError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_remote_sdp(sdp: object) -> str:
    """Return the SDP if it is plausible WebRTC SDP, else raise :class:`SdpError`."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise SdpError("bad_sdp", "sdp must be a non-empty string")
    if len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise SdpError("bad_sdp", f"sdp larger than {MAX_SDP_BYTES} bytes")
    lines = [line.strip() for line in sdp.splitlines() if line.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("bad_sdp", "sdp must start with v=0")
    if not any(line.startswith("m=") for line in lines):
        raise SdpError("bad_sdp", "sdp has no media section")
    session: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise SdpError("bad_sdp", f"malformed sdp line {line[:40]!r}")
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    session_fp = any(line.startswith("a=fingerprint:") for line in session)
    for section in sections:
        parts = section[0].split()
        if len(parts) > 1 and parts[1] == "0":
            continue  # a rejected section (port 0) needs no transport
        if not session_fp and not any(line.startswith("a=fingerprint:") for line in section):
            raise SdpError(
                "no_fingerprint", "sdp has no a=fingerprint: DTLS cannot be authenticated"
            )
    return sdp
