"""The explorer's web app (FastAPI): JSON endpoints over the served runs and the playground, and
the static single page that calls them.

Why FastAPI: its query and body models are the pydantic models editscope already validates
everything with, so a bad query is answered with the field and the reason (422) instead of a server
error; Starlette underneath serves the static page and the progress stream. The page is plain HTML,
CSS and one JavaScript file with no build step and nothing fetched from elsewhere (offline).

Safe by default: the CLI binds 127.0.0.1 and then only answers requests addressed to a loopback
name (a page elsewhere cannot reach it by DNS rebinding); bound to another address it asks for a
token (``?token=`` once, then a same-site cookie, or ``Authorization: Bearer``). Requests that
change something are JSON posts, which a cross-site form cannot send. Stores are opened read-only.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..report.data.results import StudyResults
from .catalog import RunCatalog, ServedRun
from .playground import FINISHED, STAGES, FormError, Job, Playground
from .probe_table import ProbeQuery, QueryError, probe_page, probe_rows
from .views import curves, grid, run_info, summary

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "editscope_token"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


class ApiError(Exception):
    """An answer other than 200: ``status``, a message and the form fields it concerns."""

    def __init__(self, status: int, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.fields = status, fields or {}


def _error(status: int, message: str, fields: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "fields": fields or {}}, status_code=status)


def _fields_of(e: ValidationError | RequestValidationError) -> dict[str, str]:
    out = {}
    for err in e.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "body")]
        out[".".join(loc) or "request"] = err["msg"]
    return out


def _invalid(e: ValidationError | RequestValidationError) -> ApiError:
    """A 422 naming every invalid field (``{field: message}``) and joining them into one message."""
    fields = _fields_of(e)
    return ApiError(422, "; ".join(f"{k}: {v}" for k, v in fields.items()), fields)


def create_app(catalog: RunCatalog, playground: Playground | None = None, *, token: str | None = None,
               loopback_only: bool = True) -> FastAPI:
    """The app over ``catalog``'s runs (and ``playground``'s jobs when given). ``token``: required on
    every request; ``loopback_only``: answer only requests addressed to a loopback name."""
    app = FastAPI(title="editscope explorer", docs_url=None, redoc_url=None, openapi_url=None)
    if loopback_only:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if token is None:
            return await call_next(request)
        given = (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
                 or request.headers.get("authorization", "").removeprefix("Bearer ").strip())
        if not given or not secrets.compare_digest(given.encode(), token.encode()):
            return _error(401, "this explorer needs its token: open the URL `editscope serve` printed "
                               "(it ends in ?token=...)")
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, str(e), e.fields)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        return await api_error(request, _invalid(e))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def server_error(_: Request, e: Exception) -> JSONResponse:
        return _error(500, f"the explorer failed on this request ({type(e).__name__}: {e}); the server log has more")

    def served(rid: str) -> ServedRun:
        run = catalog.get(rid)
        if run is None:
            raise ApiError(404, f"no run {rid!r} is served here; the served runs are {', '.join(catalog.runs)}")
        return run

    def results(rid: str) -> StudyResults:
        run = served(rid)
        res = run.results()
        if res is None:
            raise ApiError(409, f"run {rid!r} has no finished unit yet ({run.error}); it is shown when its study "
                                "writes one")
        return res

    def query(model: type, request: Request) -> Any:
        try:
            return model.model_validate(dict(request.query_params))
        except ValidationError as e:
            raise _invalid(e) from None

    def answer(fn, *args: Any) -> Any:
        try:
            return fn(*args)
        except QueryError as e:
            raise ApiError(422, str(e), {e.field: str(e)}) from None

    # ---- pages
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ---- runs
    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        out = []
        for rid, run in catalog.runs.items():
            res = run.results()
            out.append({"id": rid, "name": res.meta.get("name") if res else run.folder.name, "status": run.status(),
                        "units": len(res.units) if res else 0, "rows": int(len(res.frame.df)) if res else 0,
                        "reloading": run.reloading, "error": None if res else run.error})
        return out

    @app.get("/api/runs/{rid}")
    def run(rid: str) -> dict[str, Any]:
        res = results(rid)
        return {"id": rid, **run_info(res), "reloading": served(rid).reloading}

    @app.get("/api/runs/{rid}/summary")
    def run_summary(rid: str) -> dict[str, Any]:
        return summary(results(rid))

    @app.get("/api/runs/{rid}/grid")
    def run_grid(rid: str, method: str) -> dict[str, Any]:
        return answer(grid, results(rid), method)

    @app.get("/api/runs/{rid}/probes")
    def run_probes(rid: str, request: Request) -> dict[str, Any]:
        return answer(probe_page, results(rid), query(ProbeQuery, request))

    @app.get("/api/runs/{rid}/probe")
    def run_probe(rid: str, digest: str) -> dict[str, Any]:
        return answer(probe_rows, results(rid), digest)

    @app.get("/api/runs/{rid}/curves")
    def run_curves(rid: str) -> dict[str, Any]:
        return curves(results(rid))

    # ---- playground
    def pg() -> Playground:
        if playground is None:
            raise ApiError(404, "the playground is off (started with --no-playground)")
        return playground

    def job_of(job_id: str) -> Job:
        job = pg().job(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (jobs are kept while the server runs)")
        return job

    async def json_body(request: Request) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise ApiError(415, "send the form as JSON (Content-Type: application/json)")
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise ApiError(422, "the form must be a JSON object of fields", {"form": "expected an object"})
        return data

    def form_call(fn, *args: Any) -> Any:
        try:
            return fn(*args)
        except FormError as e:
            raise ApiError(422, str(e), e.fields) from None

    @app.get("/api/playground")
    def playground_info() -> dict[str, Any]:
        p = pg()
        return {"models": p.models, "methods": p.methods, "stages": list(STAGES)}

    @app.post("/api/jobs", status_code=202)
    async def submit(request: Request) -> dict[str, Any]:
        data = await json_body(request)
        job = form_call(pg().submit, data)
        return pg().snapshot(job)

    @app.get("/api/jobs/{job_id}")
    def job_state(job_id: str) -> dict[str, Any]:
        return pg().snapshot(job_of(job_id))

    @app.get("/api/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        job, p = job_of(job_id), pg()

        async def stream() -> AsyncIterator[str]:
            version = -1
            while True:
                if job.version != version:
                    version = job.version
                    shown = p.snapshot(job)
                    yield f"data: {json.dumps(shown)}\n\n"
                    if shown["state"] in FINISHED:
                        return
                if await request.is_disconnected():
                    return  # the job goes on without its watcher
                await asyncio.to_thread(p.wait_change, job, version, 0.5)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/api/jobs/{job_id}/cancel")
    async def cancel(job_id: str, request: Request) -> dict[str, Any]:
        await json_body(request)  # a JSON post: a cross-site form cannot send it
        job = job_of(job_id)
        pg().cancel(job)
        return pg().snapshot(job)

    @app.post("/api/jobs/{job_id}/undo")
    async def undo(job_id: str, request: Request) -> dict[str, Any]:
        await json_body(request)  # a JSON post: a cross-site form cannot send it
        job = job_of(job_id)
        await asyncio.to_thread(form_call, pg().undo, job)
        return pg().snapshot(job)

    @app.post("/api/jobs/{job_id}/save")
    async def save(job_id: str, request: Request) -> dict[str, Any]:
        await json_body(request)  # a JSON post: a cross-site form cannot send it
        job = job_of(job_id)
        await asyncio.to_thread(form_call, pg().save, job)  # writes the delta: off the event loop
        return pg().snapshot(job)

    @app.get("/api/jobs/{job_id}/study.yaml")
    def study(job_id: str) -> Response:
        job = job_of(job_id)
        text = Playground.study_yaml(job)
        return PlainTextResponse(text, media_type="application/yaml",
                                 headers={"Content-Disposition": f'attachment; filename="playground-{job.id}.yaml"'})

    return app


__all__ = ["ApiError", "LOOPBACK_NAMES", "STATIC", "TOKEN_COOKIE", "create_app"]
