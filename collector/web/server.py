"""Run the dashboard: uvicorn in a thread next to the collector's ingest, wired to its commits.

`Dashboard` starts ingest (through the collector service's seam), a command publisher and the web
server together, so that `collector run --web` (and the benchmark, and the tests) get the same
wiring: the ingest's after-commit callback feeds the hub that the pages' event stream reads.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from ctxscope.collector.commands import CommandPublisher
from ctxscope.collector.ingest import DEFAULT_CLIENT_ID
from ctxscope.collector.service import build_service
from ctxscope.collector.web.app import create_app
from ctxscope.collector.web.fleet_worker import FleetWorker
from ctxscope.collector.web.hub import LiveHub
from ctxscope.collector.web.security import WebSecurity, allowed_hosts_for, check_bind
from ctxscope.shared.broker_access import BrokerAccess, split_host_port


class WebServer:
    """uvicorn serving `app` from a background thread; port 0 picks a free port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port  # as asked: 0 picks a free one
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
        )
        self._thread: threading.Thread | None = None

    def _listen(self) -> socket.socket:
        """The bound socket, in the caller's thread: a busy port is an error here, not a thread that
        uvicorn ends with SystemExit."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(
                f"the web server cannot listen on {self.host}:{self._port}: {exc.strerror or exc}"
            ) from exc
        return sock

    def start(self, timeout_s: float = 15.0) -> WebServer:
        sock = self._listen()
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="ctxscope-web", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"the web server did not start on {self.host}:{self._port}")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)


class Dashboard:
    """Ingest + store + command publisher + web server, started and stopped as one. Without
    `security` the dashboard is open and so binds only to loopback (ValueError otherwise)."""

    def __init__(
        self,
        broker: str,
        store_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = DEFAULT_CLIENT_ID,
        access: BrokerAccess | None = None,
        security: WebSecurity | None = None,
        share_group: str | None = None,
    ) -> None:
        if security is None:  # open only where only this machine can reach it
            check_bind(host, None, insecure=False)
            security = WebSecurity(allowed_hosts=allowed_hosts_for(host))
        self.hub = LiveHub()
        access = access or BrokerAccess()
        self.service = build_service(
            broker, store_url, client_id, on_commit=self.hub.on_commit, access=access, share_group=share_group
        )
        self.commands = CommandPublisher(*split_host_port(broker), access=access.for_commands())
        self.fleet_worker = FleetWorker(store_url)
        app = create_app(
            self.service.store,
            self.hub,
            self.commands,
            self.service.ingest.health,
            security=security,
            ingest=self.service.ingest,
            fleet_answers=self.fleet_worker.fleet_json,
        )
        self.web = WebServer(app, host, port)

    def start(self) -> Dashboard:
        """Start the fleet view's worker and the web server, then ingest; on failure (e.g. a busy
        port) release what was opened."""
        try:
            self.fleet_worker.start()
            self.web.start()
        except Exception:  # a busy port, a worker that could not start or open the store
            self.fleet_worker.stop()
            self.commands.close()
            self.service.store.close()
            raise
        self.service.start()
        return self

    def stop(self) -> None:
        self.service.ingest.stop()
        self.commands.close()
        self.web.stop()
        self.fleet_worker.stop()
        self.service.store.close()
