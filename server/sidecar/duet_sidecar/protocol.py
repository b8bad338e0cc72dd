"""Frame codec of the sidecar protocol (PROTOCOL.md).

frame = u32 BE header_len | u32 BE payload_len | header (UTF-8 JSON object) | payload (bytes)
"""

from __future__ import annotations

import json
import socket
import struct

from . import PROTOCOL_VERSION, errors

MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 256 << 20
_PREFIX = struct.Struct(">II")


def encode(header: dict, payload: bytes = b"") -> bytes:
    h = json.dumps({"v": PROTOCOL_VERSION, **header}, separators=(",", ":")).encode("utf-8")
    return _PREFIX.pack(len(h), len(payload)) + h + payload


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        b = sock.recv(min(n, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


class Desync(Exception):
    """The stream cannot be re-framed (oversized length): answer and close the connection."""


def read_frame(sock: socket.socket, max_payload: int = MAX_PAYLOAD_BYTES) -> tuple[dict | None, bytes, errors.SidecarError | None] | None:
    """(header, payload, error) for one frame; None at a clean EOF.

    A frame whose header is not a JSON object is consumed whole and reported as an error,
    so the connection stays usable; a length over the limits raises Desync.
    """
    prefix = _read_exact(sock, _PREFIX.size)
    if prefix is None:
        return None
    hlen, plen = _PREFIX.unpack(prefix)
    if hlen > MAX_HEADER_BYTES or plen > max_payload:
        raise Desync(f"frame of header {hlen} B / payload {plen} B exceeds the limits ({MAX_HEADER_BYTES} B / {max_payload} B)")
    raw = _read_exact(sock, hlen)
    payload = _read_exact(sock, plen) if plen else b""
    if raw is None or payload is None:
        return None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, payload, errors.BadFrame(f"frame header is not UTF-8 JSON: {e}")
    if not isinstance(header, dict):
        return None, payload, errors.BadFrame("frame header must be a JSON object")
    v = header.get("v")
    if v != PROTOCOL_VERSION:
        return header, payload, errors.VersionMismatch(f"protocol version {v!r} is not supported; this sidecar speaks v{PROTOCOL_VERSION} (upgrade the gateway or the sidecar so they match)")
    return header, payload, None
