"""A record sink that streams to the collector: the spool plus the MQTT link, opened and closed as one.

Used by one-shot commands (`ctxscope agent run`, `maxctx`, `calibrate`, `profile`) through
`command_sink`; the daemon keeps its own link open for its life.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from ctxscope.agent.config import AgentConfig, ConfigError, load_config, validate_config
from ctxscope.agent.records import JsonLinesSink, M, RecordSink, RecordsNotWritten
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.shared.broker_access import split_host_port
from ctxscope.shared.ids import device_id_from_hostname
from ctxscope.shared.messages import RunFinished, RunStarted

log = logging.getLogger(__name__)


def configure(
    config_path: Path | None,
    *,
    device: str | None = None,
    broker: str | None = None,
    spool: Path | None = None,
) -> AgentConfig:
    """The agent configuration from a file and the environment, with command-line overrides."""
    try:
        config = load_config(config_path)
        changes: dict[str, Any] = {}
        if device:
            changes["device"] = device
        if broker:
            host, port = parse_broker(broker)
            changes.update(broker_host=host, broker_port=port)
        if spool:
            changes["spool_path"] = spool
        if changes:
            given = ", ".join(f"--{flag} {value}" for flag, value in _given(device, broker, spool))
            config = validate_config({**config.model_dump(), **changes}, f"with {given}")
        if config.tls and config.tls_ca is not None and not config.tls_ca.is_file():
            raise ConfigError(f"tls_ca {config.tls_ca}: no such file (the broker's CA certificate)")
        return config
    except (ConfigError, ValueError) as exc:
        raise ConfigurationProblem(str(exc)) from exc


def parse_broker(broker: str) -> tuple[str, int]:
    """--broker HOST:PORT (or [ADDRESS]:PORT for IPv6) -> (host, port), or the configuration error."""
    try:
        return split_host_port(broker)
    except ValueError as exc:
        raise ConfigError(f"--broker {exc}") from None


def _given(device: str | None, broker: str | None, spool: Path | None) -> list[tuple[str, object]]:
    """The command-line overrides given, as (option, value)."""
    given = (("device", device), ("broker", broker), ("spool", spool))
    return [(flag, value) for flag, value in given if value]


class ConfigurationProblem(click.ClickException):
    """A configuration the agent cannot use. Exit status 78 (EX_CONFIG), on which the service unit does
    not restart the agent: it would fail the same way every few seconds."""

    exit_code = 78


class RunStatusSink:
    """The spool as a one-shot command's sink, the device's retained status following its runs: busy,
    naming the run, from its RunStarted to its RunFinished, as the daemon's runs are. The collector
    takes an online device whose status names no run to be running none, so a run cut off by a crash
    shows as unfinished once its device is back online, not as running."""

    def __init__(self, spool: Spool, link: Link) -> None:
        self.spool = spool
        self.link = link

    def emit(self, message_cls: type[M], **fields: Any) -> M:
        record = self.spool.emit(message_cls, **fields)
        try:
            if isinstance(record, RunStarted):
                name = record.plan.get("name")
                self.link.set_status("busy", run_id=record.run_id, detail=f"plan {name}" if name else None)
            elif isinstance(record, RunFinished):
                self.link.set_status("online")
        except Exception as exc:  # the record is spooled: a status that cannot go out must not end the run
            log.warning("the device status could not follow %s: %r", record.kind, exc)
        return record


@contextlib.contextmanager
def streaming_sink(
    config_path: Path | None, broker: str | None, flush_timeout_s: float = 30.0
) -> Iterator[RunStatusSink]:
    """Yield the spool, as a RecordSink whose runs the device's status follows, while the link
    forwards it; flush and close on exit.

    Records that cannot be delivered before the timeout stay in the spool and go out with the next
    command or daemon that opens it; the command says so.
    """
    config = configure(config_path, broker=broker)
    spool = Spool.for_config(config)
    try:
        link = Link(config, spool)
        link.start()
    except BaseException:
        spool.close()
        raise
    try:
        yield RunStatusSink(spool, link)
    finally:
        flushed = link.close(flush_timeout_s=flush_timeout_s)
        left = spool.backlog()
        spool.close()
        if not flushed:
            why = (
                "no collector is online to take them"
                if link.holding
                else f"not yet acknowledged by {config.broker_host}:{config.broker_port}"
            )
            click.echo(
                f"{left} records are {why}; they stay in {config.resolved_spool_path()} and are sent by the "
                "next agent run or serve",
                err=True,
            )


def command_sink(
    stack: contextlib.ExitStack[bool | None], out: Path | None, broker: str | None, config_path: Path | None
) -> RecordSink:
    """The sink of a one-shot command: the collector when a broker or a configuration is named, else
    the JSON-lines file `out` (appended to), else nowhere (the command prints its table)."""
    if broker or config_path:
        return stack.enter_context(streaming_sink(config_path, broker))
    stream = stack.enter_context(records_file(out)) if out else None
    return JsonLinesSink(stream, device_id_from_hostname(socket.gethostname()))


@contextlib.contextmanager
def records_file(out: Path) -> Iterator[TextIO]:
    """`out` opened for appending records; a file that cannot be opened is a bad `--out`, and records
    that cannot be written (`RecordsNotWritten`) end the command with that one line, not a traceback."""
    try:
        stream = out.open("a", encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"{out}: {exc.strerror or exc}", param_hint="'--out'") from exc
    try:
        yield stream
    except RecordsNotWritten as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        # every record was flushed when emitted: closing can only fail again on what failed then
        with contextlib.suppress(OSError):
            stream.close()
