"""PageGuard: an ASGI middleware in front of Gradio's routes that adds the security headers
(Content-Security-Policy, see ui/safety.py), refuses request bodies larger than the app ever
needs, and serves the admin's export downloads (see ui/exports.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response

from ui.exports import ROUTE, ExportStore
from ui.safety import SECURITY_HEADERS

log = logging.getLogger(__name__)
Scope = dict[str, Any]


class PageGuard:
    """Pure ASGI (streamed answers pass through untouched)."""

    def __init__(self, app: Any, *, csp: str, max_body: int, exports: ExportStore) -> None:
        self.app, self.max_body, self.exports = app, max_body, exports
        headers = {"content-security-policy": csp, **SECURITY_HEADERS}
        self._headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self._route = f"/{ROUTE}/"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if self._route in path:
            await self._download(path, scope, receive, self._with_headers(send))
            return
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                await _too_large(self.max_body)(scope, receive, send)
                return
            if length is None:  # chunked: count what arrives
                receive = self._capped(receive)
        await self.app(scope, receive, self._with_headers(send))

    def _with_headers(self, send: Any) -> Any:
        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self._headers if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return sending

    def _capped(self, receive: Any) -> Any:
        seen = 0

        async def receiving() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    log.warning("refused a request body over %d bytes", self.max_body)
                    return {"type": "http.disconnect"}
            return message

        return receiving

    async def _download(self, path: str, scope: Scope, receive: Any, send: Any) -> None:
        key, _, name = path.split(self._route, 1)[1].partition("/")
        found = self.exports.take(key, name) if scope.get("method") == "GET" and key and name else None
        if found is None or not found.is_file():
            response: Response = Response("This download link has expired or was already used; "
                                          "prepare the downloads again.\n", status_code=404,
                                          media_type="text/plain", headers={"cache-control": "no-store"})
        else:
            response = FileResponse(found, filename=name, media_type="application/octet-stream",
                                    headers={"cache-control": "no-store"},
                                    background=BackgroundTask(self.exports.served, key, Path(found)))
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _too_large(limit: int) -> Response:
    body = {"error": f"Request too large: this app takes at most {limit // 1024} KB per request."}
    return Response(json.dumps(body), status_code=413, media_type="application/json")
