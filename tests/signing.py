"""Standard Webhooks signatures written from the definition, never with the library the service verifies with.

HMAC-SHA256 over ``{id}.{timestamp}.{body}`` with the base64-decoded secret after ``whsec_``: a bug
shared by the service's library and these helpers cannot pass unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

SECRET = "whsec_" + base64.b64encode(b"newsdigest-webhook-test-secret!!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"an-old-or-wrong-secret-of-32-byt").decode()
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"the-cms-callback-secret-32-bytes").decode()


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` written from the spec, not from the library."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed(body: bytes, *, secret: str = SECRET, msg_id: str = "msg_1", timestamp: int | None = None,
           signature: str | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": signature or sign(secret, msg_id, ts, body)}


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiving side of the same definition (the CMS stub uses it)."""
    expected = sign(secret, headers["webhook-id"], headers["webhook-timestamp"], body).split(",", 1)[1]
    given = [s.split(",", 1)[1] for s in headers["webhook-signature"].split(" ") if s.startswith("v1,")]
    fresh = abs(time.time() - int(headers["webhook-timestamp"])) <= 300
    return fresh and any(hmac.compare_digest(expected, g) for g in given)


def event(kind: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "timestamp": "2025-01-01T10:00:00Z", "data": data}).encode()
