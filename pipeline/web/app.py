"""The web view's HTTP side (Starlette): one page, server-sent events, frames, crops and answers.

    GET  /                    the page (pipeline/web/page.html; plain HTML and JS, no build step)
    GET  /events              server-sent events: the live state when it changes (read every half second;
                              a client that stops reading is dropped: pipeline/web/events.py)
    GET  /api/state           the same, once
    GET  /frame/{source}      the source's newest annotated frame (JPEG)
    GET  /api/tracks?which=   the gallery: flagged (default), kept or all, newest first
    GET  /crop/{file}         a gallery crop (under OUT/tracks/)
    POST /api/review          {"track": "STREAM/ID", "answer": "hallucination" | "real"} -> OUT/review.jsonl

Bad requests get a 4xx and change nothing: an unknown track 404, a body over 4 KB 413, a body
that is not the JSON object above 400. When the view is bound beyond loopback every request
needs the token (`?token=` once, then a cookie; or `Authorization: Bearer`).
"""

from __future__ import annotations

import hmac
import json
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from pipeline.data.review_file import ANSWERS
from pipeline.errors import GhostboxError
from pipeline.web.events import EventHub, Reset
from pipeline.web.state import Gallery, LiveState

MAX_BODY = 4096
TOKEN_COOKIE = "ghostbox_token"


class _TokenCheck(BaseHTTPMiddleware):
    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        given = (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
                 or request.headers.get("authorization", "").removeprefix("Bearer ").strip())
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            return JSONResponse({"error": "token required (open the URL printed by ghostbox, with ?token=)"}, 401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
        return response


def make_app(gallery: Gallery, live: LiveState | None = None, token: str | None = None,
             title: str = "ghostbox", reset: Reset | None = None) -> Starlette:
    """`live`: None when there is no running stream (`ghostbox review`): the page shows the gallery only.
    `reset`: how to reset the connection of an `/events` client that stopped reading (the server's)."""
    page = resources.files("pipeline.web").joinpath("page.html").read_text(encoding="utf-8")

    def state() -> dict[str, Any]:
        gallery.refresh()
        snapshot = live.snapshot() if live is not None else {"version": 0, "sources": {}}
        snapshot.update(live_view=live is not None, gallery_version=gallery.version, title=title)
        return snapshot

    async def index(request: Request) -> Response:
        return HTMLResponse(page.replace("{{title}}", json.dumps(title)[1:-1].replace("<", "")),
                            headers={"Cache-Control": "no-store"})

    events = EventHub(state, lambda current: (current["version"], current["gallery_version"]), reset)

    async def api_state(request: Request) -> Response:
        return JSONResponse({**state(), "event_clients": events.counts()})

    async def frame(request: Request) -> Response:
        found = live.frame(request.path_params["source"]) if live is not None else None
        if found is None:
            return JSONResponse({"error": f"no frame of source {request.path_params['source']!r} yet"}, 404)
        return Response(found[1], media_type="image/jpeg",
                        headers={"Cache-Control": "no-store", "X-Frame-Seq": str(found[0])})

    async def tracks(request: Request) -> Response:
        which = request.query_params.get("which", "flagged")
        if which not in ("flagged", "kept", "all"):
            return JSONResponse({"error": f"which must be flagged, kept or all, got {which!r}"}, 400)
        gallery.refresh()
        return JSONResponse({"tracks": gallery.listing(which), "version": gallery.version})

    async def crop(request: Request) -> Response:
        try:
            path = gallery.crop_path(request.path_params["file"])
        except GhostboxError as exc:
            return JSONResponse({"error": str(exc)}, 404)
        if not path.is_file():
            return JSONResponse({"error": "no such crop"}, 404)
        return FileResponse(path, media_type="image/jpeg")

    async def review(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, 413)
        body = b""
        async for chunk in request.stream():  # chunked bodies are counted as they come
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, 413)
        try:
            data = json.loads(body)
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, 400)
        if not isinstance(data, dict) or not isinstance(data.get("track"), str) or not isinstance(
                data.get("answer"), str):
            return JSONResponse({"error": 'expected {"track": "STREAM/ID", "answer": "hallucination" | "real"}'},
                                400)
        if data["answer"] not in ANSWERS:
            return JSONResponse({"error": f"answer must be one of {list(ANSWERS)}, got {data['answer'][:40]!r}"},
                                400)
        gallery.refresh()
        try:
            record = gallery.answer(data["track"][:200], data["answer"])
        except KeyError:
            return JSONResponse({"error": f"no track {data['track'][:200]!r} in this run's gallery"}, 404)
        except OSError as exc:
            return JSONResponse({"error": f"{gallery.review.path}: not written ({exc})"}, 507)
        return JSONResponse({"ok": True, "review": record})

    routes = [
        Route("/", index), Route("/events", events, methods=["GET"]), Route("/api/state", api_state),
        Route("/frame/{source}", frame), Route("/api/tracks", tracks), Route("/crop/{file:path}", crop),
        Route("/api/review", review, methods=["POST"]),
    ]
    middleware = [Middleware(_TokenCheck, token=token)] if token else []
    app = Starlette(routes=routes, middleware=middleware)
    app.state.events = events  # its clients and counts
    return app
