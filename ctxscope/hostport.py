"""`HOST:PORT` as a click parameter type: an address that is not one is a usage error (exit 2) naming
the option, as every other bad argument is; the command receives the text as given."""

from __future__ import annotations

import click

from ctxscope.shared.broker_access import split_host_port


class HostPort(click.ParamType):
    name = "HOST:PORT"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            split_host_port(text)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return text


HOST_PORT = HostPort()
