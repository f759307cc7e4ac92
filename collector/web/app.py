"""The FastAPI app: HTML pages, their JSON twins under /api, live events (SSE) and plan sending.

/                          fleet page      /api/fleet[?devices=a,b]     devices, live values, runs
/devices/<id>              device page     /api/devices/<id>            characterization, runs, acks
                                           /api/devices/<id>/figures    plotly figures [?reference=1]
                                           /api/fleet/<id>              one device's live values
                                           /api/devices/<id>/prediction predicted curves [?source=<id>]
/compare                   compare page    /api/compare?devices=&models=&metric=
/api/events[?device=<id>]  server-sent events: `changed` per device after each ingest commit, while logged in
POST /api/devices/<id>/plans  {"plan_toml" | "shipped", "ttl_s"} -> 202 {"command_id"}
/api/plans                 plans shipped with ctxscope
/api/ingest                ingest health: connected, store failing (the fleet page's banner), inbox
/login, POST /login, POST /logout   when credentials are configured (see `security`)
/api/devices/<id>/trace    power and temperature trace (device page)
/api/devices/<id>/history?channel=[&source=&since_ns=&until_ns=&max_points=]
                           a channel over months, from rollups and raw telemetry (device page)
/api/devices/<id>/history/channels   the channels that have a history
/api/fleet/traces          the same, small, per device (fleet page sparklines)
/metrics                   Prometheus metrics (ingest counters and backlog, per-device state, power)
/healthz, /readyz          liveness; readiness (store answers, broker subscriptions held): 200 or 503
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import cache
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from ctxscope.collector import observability, plans
from ctxscope.collector.commands import CommandPublisher, PlanError, parse_plan
from ctxscope.collector.observability import IngestState
from ctxscope.collector.readmodel import figures, history, traces, views
from ctxscope.collector.readmodel.source import FleetSource, require_known_device
from ctxscope.collector.web.auth import Credentials
from ctxscope.collector.web.fleet_worker import answer_json, fleet_answer
from ctxscope.collector.web.hub import LiveHub
from ctxscope.collector.web.login_gate import LoginGate
from ctxscope.collector.web.login_throttle import LoginThrottle, retry_after
from ctxscope.collector.web.security import (
    COOKIE,
    Session,
    Sessions,
    WebSecurity,
    middleware,
    same_token,
    set_cookie,
)
from ctxscope.shared.messages import MAX_COMMAND_TTL_S

KEEPALIVE_S = 15.0
MAX_FORM_BYTES = 4096


class PlanRequest(BaseModel):
    plan_toml: str | None = Field(default=None, description="plan as TOML text")
    shipped: str | None = Field(default=None, description="name of a plan shipped with ctxscope")
    ttl_s: float = Field(default=600.0, gt=0, le=MAX_COMMAND_TTL_S)


@cache
def _page(name: str) -> Template:
    return Template(resources.files(__package__).joinpath("pages").joinpath(name).read_text(encoding="utf-8"))


@cache
def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def create_app(
    store: FleetSource,
    hub: LiveHub,
    commands: CommandPublisher | None = None,
    ingest_health: Callable[[], dict[str, Any]] | None = None,
    security: WebSecurity | None = None,
    ingest: IngestState | None = None,
    fleet_answers: Callable[[Sequence[str]], bytes] | None = None,
) -> FastAPI:
    """The dashboard over `store`, live through `hub`; plans go out through `commands` when given;
    `ingest_health` (the collector's `Ingest.health`) feeds /api/ingest and the fleet page's banner;
    access as `security` says (default: open, loopback host names only); `/metrics` and `/readyz`
    report on `ingest` when this process ingests; `fleet_answers` (a `FleetWorker`'s `fleet_json`)
    computes /api/fleet outside this process, which otherwise computes it."""
    security = security or WebSecurity()
    sessions = Sessions()
    login_gate = LoginGate()
    login_throttle = LoginThrottle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop())
        yield

    app = FastAPI(title="ctxscope collector", lifespan=lifespan)
    app.middleware("http")(middleware(security, sessions))
    channels = views.ChannelCache()

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> Response:
        return Response(
            _plotly_js(), media_type="text/javascript", headers={"cache-control": "max-age=86400"}
        )

    # After the plotly route: a mount answers every path under its prefix.
    app.mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static")
    # Before /api/fleet/{device}, which would otherwise take /api/fleet/traces for a device's path.
    app.include_router(traces.router(store))
    app.include_router(history.router(store))

    # ---------------------------------------------------------------- pages (render their twins)

    @app.get("/", response_class=HTMLResponse)
    def fleet_page(request: Request) -> str:
        return _page("fleet.html").substitute(csrf=_csrf(request))

    @app.get("/devices/{device}", response_class=HTMLResponse)
    def device_page(device: str, request: Request) -> str:
        require_known_device(store, device)
        return _page("device.html").substitute(device=html.escape(device), csrf=_csrf(request))

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request) -> str:
        return _page("compare.html").substitute(csrf=_csrf(request))

    # ---------------------------------------------------------------- login

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/") -> str:
        return _login_page(request, _local_path(next), "")

    @app.post("/login", response_model=None)
    async def login(request: Request) -> Response:
        form = await _form(request)
        target = _local_path(form.get("next", "/"))
        _form_session(request, sessions, form)  # the login form carries its session's token
        if security.credentials is None:
            return RedirectResponse(target, 303)
        user = form.get("username", "")
        refused = await check_password(request, target, security.credentials, user, form.get("password", ""))
        if refused is not None:
            return refused
        # A fresh session id and CSRF token after login: neither one known before it (to whoever planted
        # or read the anonymous session) is worth anything after it.
        sessions.drop(request.cookies.get(COOKIE))
        response = RedirectResponse(target, 303)
        set_cookie(response, request, security, sessions.add(Session(user=user)))
        return response

    async def check_password(
        request: Request, target: str, credentials: Credentials, user: str, password: str
    ) -> Response | None:
        """None when the password is right; otherwise the answer: 429 while the client address or the
        user name is throttled or the gate is full (no check runs), 401 when it is wrong."""
        address = request.client.host if request.client else ""
        wait_s = login_throttle.admit(address, user)
        if wait_s > 0:
            error = f"too many failed logins: try again in {retry_after(wait_s)} s"
            return _too_many(request, target, error, wait_s)
        passed = await login_gate.check(credentials.check, user, password)
        if passed is None:
            login_throttle.refund(address, user)  # refused without a check: no guess was made
            return _too_many(
                request, target, "too many login attempts at once: try again in a few seconds", 5
            )
        if not passed:
            # The answer waits out the address's pace, so that a user who retries is let in at once.
            await asyncio.sleep(login_throttle.pace.refill_s)
            return HTMLResponse(_login_page(request, target, "wrong user or password"), 401)
        login_throttle.refund(address, user)
        return None

    @app.post("/logout", response_model=None)
    async def logout(request: Request) -> Response:
        _form_session(request, sessions, await _form(request))
        sessions.drop(request.cookies.get(COOKIE))
        response = RedirectResponse("/login" if security.credentials else "/", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # ---------------------------------------------------------------- JSON twins

    @app.get("/api/fleet")
    def fleet_json(devices: str = "") -> Response:
        names = _csv(devices)
        body = fleet_answer(store, channels, names) if fleet_answers is None else fleet_answers(names)
        if ingest_health is not None:  # the answer is a JSON object: the key goes in front
            rest = b"}" if body == b"{}" else b"," + body[1:]
            body = b'{"ingest":' + answer_json(ingest_health()) + rest
        return Response(body, media_type="application/json")

    @app.get("/api/ingest")
    def ingest_json() -> dict[str, Any]:
        """Whether ingest is connected and storing; `store_failing` raises the fleet page's banner."""
        if ingest_health is None:
            return {"available": False, "store_failing": False}
        return {"available": True, **ingest_health()}

    @app.get("/api/fleet/{device}")
    def device_live_json(device: str) -> dict[str, Any]:
        require_known_device(store, device)
        return views.device_live(store, device, channels)

    @app.get("/api/devices/{device}")
    def device_json(device: str) -> dict[str, Any]:
        require_known_device(store, device)
        return views.device(store, device, channels)

    @app.get("/api/devices/{device}/figures")
    def device_figures(device: str, reference: bool = False) -> dict[str, Any]:
        require_known_device(store, device)
        view = views.device(store, device, channels)
        return {"generated_ns": view["generated_ns"], "figures": figures.device_figures(view, reference)}

    @app.get("/api/devices/{device}/prediction")
    def device_prediction(device: str, source: str | None = None) -> dict[str, Any]:
        from ctxscope.collector.predict.fleet import prediction_view
        from ctxscope.collector.predict.inputs import PredictionInputError
        from ctxscope.collector.readmodel.prediction import prediction_figures

        require_known_device(store, device)
        if source is not None:
            require_known_device(store, source)
        try:
            view = prediction_view(store, device, source)
        except PredictionInputError as exc:
            return {"device": device, "available": False, "reason": str(exc)}
        return {**view, "available": True, "figures": prediction_figures(view)}

    @app.get("/api/compare")
    def compare_json(devices: str = "", models: str = "", metric: str = "ttft") -> dict[str, Any]:
        view = views.comparison(store, _csv(devices), _csv(models), metric)
        return {**view, "figure": figures.compare_figure(view)}

    @app.get("/api/plans")
    def shipped_plans() -> dict[str, Any]:
        return {"plans": plans.shipped()}

    @app.post("/api/devices/{device}/plans", status_code=202)
    def send_plan(device: str, request: PlanRequest) -> dict[str, Any]:
        require_known_device(store, device)
        if commands is None:
            raise HTTPException(503, "this collector has no broker connection for commands")
        text = request.plan_toml
        if request.shipped:
            text = plans.shipped().get(request.shipped)
            if text is None:
                raise HTTPException(400, f"no shipped plan named {request.shipped!r}")
        try:
            plan = parse_plan(text or "")
        except PlanError as exc:
            raise HTTPException(400, str(exc)) from exc
        try:
            command = commands.send_plan(device, plan, request.ttl_s)
        except ConnectionError as exc:
            raise HTTPException(503, str(exc)) from exc
        return {"command_id": command.command_id, "device": device, "expires_at": command.expires_at}

    # ---------------------------------------------------------------- operations

    metrics_registry = observability.registry(store, lambda: ingest)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz(request: Request) -> JSONResponse:
        """Open to probes (security.PROBE_PATHS); a failing check's error only to a logged-in session
        where there is a login."""
        readiness = observability.ready(store, ingest)
        body = readiness.as_dict()
        if security.credentials is not None and request.state.session.user is None:
            body["checks"] = {
                name: "ok" if value == "ok" else "failing" for name, value in readiness.checks.items()
            }
        return JSONResponse(body, status_code=200 if readiness.ready else 503)

    # ---------------------------------------------------------------- live events

    @app.get("/api/events")
    async def events(request: Request, device: str | None = None) -> StreamingResponse:
        opened_by, session_id = request.state.session, request.cookies.get(COOKIE)

        def logged_in() -> bool:
            """Whether the session that opened the stream still holds: not logged out, not expired."""
            return security.credentials is None or sessions.get(session_id) is opened_by

        return StreamingResponse(
            _event_stream(request, hub, device, logged_in),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return app


async def _event_stream(
    request: Request, hub: LiveHub, device: str | None, logged_in: Callable[[], bool]
) -> AsyncIterator[str]:
    """Batches of `device`'s events (all devices' when None) and keepalives, while the client listens
    and `logged_in()`, which is asked after every wait, before anything is sent."""
    async with hub.subscribe() as sub:
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            try:
                batch = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                batch = None
            if not logged_in():
                return  # logged out or expired: the stream ends, and a reconnect meets the login
            if batch is None:
                yield ": keepalive\n\n"
                continue
            chosen = [e for e in batch if device is None or e["device"] == device]
            missed, sub.missed = sub.missed, 0
            if chosen or missed:
                body = {"sent_ns": time.time_ns(), "missed": missed, "events": chosen}
                yield f"event: batch\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


def _csrf(request: Request) -> str:
    session: Session = request.state.session
    return html.escape(session.csrf)


def _login_page(request: Request, target: str, error: str) -> str:
    return _page("login.html").substitute(
        csrf=_csrf(request), next=html.escape(target), error=html.escape(error)
    )


def _too_many(request: Request, target: str, error: str, wait_s: float) -> HTMLResponse:
    return HTMLResponse(
        _login_page(request, target, error), 429, headers={"retry-after": retry_after(wait_s)}
    )


def _local_path(target: str) -> str:
    """A redirect target on this site only (a path, never `//host` or a URL)."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _form_session(request: Request, sessions: Sessions, form: dict[str, str]) -> Session:
    """The session whose CSRF token the form carries; 403 otherwise."""
    session = sessions.get(request.cookies.get(COOKIE))
    if session is None or not same_token(form.get("csrf_token", ""), session.csrf):
        raise HTTPException(403, "missing or wrong CSRF token (reload the page)")
    return session


def _csv(value: str) -> list[str]:
    return [v for v in (part.strip() for part in value.split(",")) if v]
