"""The HTTP/1.1 protocol ``newsdigest serve`` runs uvicorn with: h11, answering the requests its
parser refuses (``Content-Length: abc``, a malformed request line) as problem+json like every other
error, instead of uvicorn's plain-text 400. The app never sees such a request, so only here can
its answer keep the contract."""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.errors import PROBLEM_TYPE


class ProblemH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"type": PROBLEM_TYPE + "bad-request", "title": "Bad request", "status": 400,
                           "detail": f"the request could not be read as HTTP: {msg}"}).encode()
        headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()
