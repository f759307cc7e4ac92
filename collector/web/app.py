"""The FastAPI app: HTML pages, their JSON twins under /api, live events (SSE) and plan sending.

/                          fleet page      /api/fleet[?devices=a,b]     devices, live values, runs
/devices/<id>              device page     /api/devices/<id>            characterization, runs, acks
                                           /api/devices/<id>/figures    plotly figures [?reference=1]
                                           /api/fleet/<id>              one device's live values
                                           /api/devices/<id>/prediction predicted curves [?source=<id>]
/compare                   compare page    /api/compare?devices=&models=&metric=
/api/events[?device=<id>]  server-sent events: `changed` per device after each ingest commit
POST /api/devices/<id>/plans  {"plan_toml" | "shipped", "ttl_s"} -> 202 {"command_id"}
/api/plans                 plans shipped with ctxscope
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ctxscope.collector.commands import CommandPublisher, PlanError, parse_plan
from ctxscope.collector.web import figures, plans, views
from ctxscope.collector.web.hub import LiveHub
from ctxscope.collector.web.source import FleetSource
from ctxscope.shared.ids import DEVICE_ID_PATTERN

KEEPALIVE_S = 15.0


class PlanRequest(BaseModel):
    plan_toml: str | None = Field(default=None, description="plan as TOML text")
    shipped: str | None = Field(default=None, description="name of a plan shipped with ctxscope")
    ttl_s: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)


@cache
def _page(name: str) -> Template:
    return Template(resources.files(__package__).joinpath("pages").joinpath(name).read_text(encoding="utf-8"))


@cache
def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def _known_device(source: FleetSource, device: str) -> None:
    if not DEVICE_ID_PATTERN.fullmatch(device) or device not in {d["device"] for d in source.devices()}:
        raise HTTPException(404, f"unknown device {device!r}")


def create_app(store: FleetSource, hub: LiveHub, commands: CommandPublisher | None = None) -> FastAPI:
    """The dashboard over `store`, live through `hub`; plans go out through `commands` when given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop())
        yield

    app = FastAPI(title="ctxscope collector", lifespan=lifespan)
    channels = views.ChannelCache()

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> Response:
        return Response(
            _plotly_js(), media_type="text/javascript", headers={"cache-control": "max-age=86400"}
        )

    # After the plotly route: a mount answers every path under its prefix.
    app.mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static")

    # ---------------------------------------------------------------- pages (render their twins)

    @app.get("/", response_class=HTMLResponse)
    def fleet_page() -> str:
        return _page("fleet.html").substitute()

    @app.get("/devices/{device}", response_class=HTMLResponse)
    def device_page(device: str) -> str:
        _known_device(store, device)
        return _page("device.html").substitute(device=html.escape(device))

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page() -> str:
        return _page("compare.html").substitute()

    # ---------------------------------------------------------------- JSON twins

    @app.get("/api/fleet")
    def fleet_json(devices: str = "") -> dict[str, Any]:
        return views.fleet(store, channels, _csv(devices))

    @app.get("/api/fleet/{device}")
    def device_live_json(device: str) -> dict[str, Any]:
        _known_device(store, device)
        return views.device_live(store, device, channels)

    @app.get("/api/devices/{device}")
    def device_json(device: str) -> dict[str, Any]:
        _known_device(store, device)
        return views.device(store, device, channels)

    @app.get("/api/devices/{device}/figures")
    def device_figures(device: str, reference: bool = False) -> dict[str, Any]:
        _known_device(store, device)
        view = views.device(store, device, channels)
        return {"generated_ns": view["generated_ns"], "figures": figures.device_figures(view, reference)}

    @app.get("/api/devices/{device}/prediction")
    def device_prediction(device: str, source: str | None = None) -> dict[str, Any]:
        from ctxscope.collector.predict.fleet import prediction_view
        from ctxscope.collector.predict.inputs import PredictionInputError
        from ctxscope.collector.web.prediction import prediction_figures

        _known_device(store, device)
        if source is not None:
            _known_device(store, source)
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
        _known_device(store, device)
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

    # ---------------------------------------------------------------- live events

    @app.get("/api/events")
    async def events(request: Request, device: str | None = None) -> StreamingResponse:

        async def stream() -> AsyncIterator[str]:
            async with hub.subscribe() as sub:
                yield "retry: 2000\n\n"
                while not await request.is_disconnected():
                    try:
                        batch = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    chosen = [e for e in batch if device is None or e["device"] == device]
                    missed, sub.missed = sub.missed, 0
                    if chosen or missed:
                        body = {"sent_ns": time.time_ns(), "missed": missed, "events": chosen}
                        yield f"event: batch\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return app


def _csv(value: str) -> list[str]:
    return [v for v in (part.strip() for part in value.split(",")) if v]
