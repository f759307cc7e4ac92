"""`ctxscope agent serve`: the headless agent.

Connects to the broker (retained birth and status, last will), streams telemetry for as long as it
runs, takes `run_plan` commands from the collector, validates each plan (a bad one is refused with
its reason in a `command_ack`), and runs accepted plans one at a time, streaming every record
through the on-disk spool. SIGTERM / SIGINT stop it cleanly: the running plan ends after its current
point, an explicit `offline` status is published and the spool is flushed (what cannot be flushed
stays spooled for the next start).
"""

from __future__ import annotations

import logging
import platform
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ctxscope.agent.cliopts import identity_options
from ctxscope.agent.engine.recorder import new_run_id
from ctxscope.agent.engine.runner import default_device, run_plan
from ctxscope.agent.localstate import StateWriter, state_path
from ctxscope.agent.streaming import configure
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.compat import tomllib
from ctxscope.ratelog import RateLimitedLog
from ctxscope.shared.codec import shorten
from ctxscope.shared.messages import Command, CommandAck, Log

log = logging.getLogger(__name__)
_log = RateLimitedLog(log)
COMMANDS = ("run_plan",)
QUEUE_LIMIT = 16
ACK_REASON_CHARS = 1024


@dataclass(frozen=True)
class AcceptedPlan:
    command_id: str
    run_id: str
    plan: Any  # ctxscope.agent.engine.plan.Plan (imported lazily: it pulls in the zoo)


class Daemon:
    """Owns the plan queue; `handle_command` runs on the MQTT thread and only validates and queues."""

    def __init__(self, link: Link, spool: Spool, *, torch_device: str | None, observer: Any = None) -> None:
        self.link = link
        self.spool = spool
        self.torch_device = torch_device
        self.observer = observer
        self.stopping = threading.Event()
        self._plans: queue.Queue[AcceptedPlan] = queue.Queue(maxsize=QUEUE_LIMIT)

    def handle_command(self, command: Command) -> None:
        if command.name != "run_plan":
            self._ack(
                command,
                accepted=False,
                reason=f"unknown command {command.name!r}; accepted: {', '.join(COMMANDS)}",
            )
            return
        try:
            plan = parse_plan_argument(command.args.get("plan"))
        except ValueError as exc:
            self._ack(command, accepted=False, reason=str(exc))
            return
        except Exception as exc:  # a checker bug: refuse this plan with a reason, keep serving
            _log.exception("plan check", "checking the plan of command %s failed", command.command_id)
            self._ack(command, accepted=False, reason=f"the plan could not be checked: {type(exc).__name__}")
            return
        if self.stopping.is_set():
            self._ack(command, accepted=False, reason="the agent is shutting down")
            return
        accepted = AcceptedPlan(command.command_id, new_run_id(), plan)
        try:
            self._plans.put_nowait(accepted)
        except queue.Full:
            self._ack(command, accepted=False, reason=f"{QUEUE_LIMIT} plans are already queued")
            return
        self._ack(command, accepted=True, run_id=accepted.run_id)

    def _ack(
        self, command: Command, *, accepted: bool, reason: str | None = None, run_id: str | None = None
    ) -> None:
        # A refusal's reason may quote the input (a plan's validation error): never echo it whole.
        reason = shorten(reason, ACK_REASON_CHARS) if reason is not None else None
        self.spool.emit(
            CommandAck,
            command_id=command.command_id,
            name=command.name,
            accepted=accepted,
            reason=reason,
            run_id=run_id,
        )
        if not accepted:
            _log.warning("refused", "refused command %s (%s): %s", command.command_id, command.name, reason)

    def run_until_stopped(self) -> None:
        """Run queued plans one at a time until `stopping` is set; nothing a plan does ends this loop."""
        while not self.stopping.is_set():
            try:
                accepted = self._plans.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._run(accepted)
            except Exception as exc:  # e.g. the status or the spool failed around the run
                _log.exception("run loop", "plan %s: %s", accepted.plan.name, shorten(repr(exc)))
        self._report_unstarted()

    def _run(self, accepted: AcceptedPlan) -> None:
        self.link.set_status("busy", run_id=accepted.run_id, detail=f"plan {accepted.plan.name}")
        try:
            self._warn_about_kernel_limits(accepted.plan)
            summary = run_plan(
                accepted.plan,
                self.spool,
                observer=self.observer,
                progress=False,
                device=self.torch_device,
                should_stop=self.stopping.is_set,
                run_id=accepted.run_id,
            )
            log.info(
                "plan %s finished: %d ok, %d failed",
                accepted.plan.name,
                summary.points_ok,
                summary.points_failed,
            )
        except Exception as exc:  # a broken plan run must not take the daemon down with it
            log.exception("plan %s failed", accepted.plan.name)
            self.spool.emit(
                Log,
                level="error",
                logger=__name__,
                message=shorten(f"plan {accepted.plan.name} failed: {exc!r}", 4096),
            )
        finally:
            self.link.set_status("online")

    def _warn_about_kernel_limits(self, plan: Any) -> None:
        """On a GPU, points that will fault on mamba_ssm's SSD kernels are said before the run starts."""
        from ctxscope.agent.engine.plan import index_limit_warnings

        if (self.torch_device or default_device()) != "cuda":
            return
        for warning in index_limit_warnings(plan):
            log.warning("plan %s: %s", plan.name, warning)
            self.spool.emit(Log, level="warning", logger=__name__, message=f"plan {plan.name}: {warning}")

    def _report_unstarted(self) -> None:
        """Accepted plans that never started are said to be dropped, not silently forgotten."""
        while True:
            try:
                accepted = self._plans.get_nowait()
            except queue.Empty:
                return
            self.spool.emit(
                Log,
                level="warning",
                logger=__name__,
                message=f"plan {accepted.plan.name} (run {accepted.run_id}, command {accepted.command_id}) "
                "was accepted but not started: the agent stopped; send it again",
            )


def parse_plan_argument(raw: object) -> Any:
    """A plan from a command argument: a table (dict) or TOML text; raises ValueError with the reason."""
    from ctxscope.agent.engine.plan import validate

    if isinstance(raw, str):
        try:
            raw = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"plan is not valid TOML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError("the command needs args.plan: a plan table or its TOML text")
    return validate(raw)


def device_meta(telemetry: dict[str, list[str]]) -> dict[str, Any]:
    """The birth message's description of this device: platform, accelerators, software, sensors."""
    import torch

    from ctxscope.agent.engine.manifest import package_versions

    accelerators: list[dict[str, Any]] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            accelerators.append(
                {
                    "name": props.name,
                    "memory_bytes": props.total_memory,
                    "compute_capability": f"{props.major}.{props.minor}",
                }
            )
    return {
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "release": platform.release(),
        },
        "accelerators": accelerators,
        "software": package_versions(),
        "telemetry": telemetry,
        "commands": list(COMMANDS),
    }


@click.command("serve")
@identity_options
@click.option("--broker", help="HOST:PORT of the MQTT broker (default: from the config, 127.0.0.1:1883)")
@click.option(
    "--telemetry-rate-hz",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="sampling rate of the telemetry backends; 0 turns telemetry off",
)
@click.option("--torch-device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
@click.option("--run-for", type=click.FloatRange(min=0.0), default=None, help="stop after this many seconds")
def serve(
    config_path: Path | None,
    device: str | None,
    broker: str | None,
    spool: Path | None,
    telemetry_rate_hz: float,
    torch_device: str | None,
    run_for: float | None,
) -> None:
    """Run headless: publish status and telemetry, accept plans from the collector, stream results."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = configure(config_path, device=device, broker=broker, spool=spool)

    from ctxscope.agent.telemetry.session import TelemetrySession

    outbox = Spool.for_config(config)
    telemetry = TelemetrySession(rate_hz=telemetry_rate_hz, sink=outbox) if telemetry_rate_hz > 0 else None
    if telemetry is not None:
        telemetry.start()
    link = Link(config, outbox, meta=device_meta(telemetry.meta() if telemetry else {}))
    daemon = Daemon(link, outbox, torch_device=torch_device, observer=telemetry)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current point", signum)
        daemon.stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # A daemon thread, cancelled on the way out: a stop by signal must not wait for --run-for to end.
    timer = threading.Timer(run_for, daemon.stopping.set) if run_for is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()

    link.on_command(daemon.handle_command)
    link.start()
    state = StateWriter(
        state_path(config),
        lambda: {
            "device": config.device,
            "broker": f"{config.broker_host}:{config.broker_port}",
            "connected": link.connected,
            "spool_depth": outbox.backlog(),
            "holding": link.holding,
            "last_error": link.last_error,
        },
    )
    state.start()
    log.info(
        "agent %s: broker %s:%d, spool %s (stream %s)",
        config.device,
        config.broker_host,
        config.broker_port,
        outbox.path,
        outbox.stream,
    )
    started = time.monotonic()
    try:
        daemon.run_until_stopped()
    finally:
        if timer is not None:
            timer.cancel()
        if telemetry is not None:
            telemetry.stop()
        flushed = link.close(flush_timeout_s=15.0)
        state.stop()
        log.info(
            "stopped after %.1f s; spool %s (%d records left for the next start)",
            time.monotonic() - started,
            "flushed" if flushed else "not fully flushed",
            outbox.backlog(),
        )
        outbox.close()
