"""Agent configuration: identity, broker connection and spool bounds, from TOML plus `CTXSCOPE_*` env.

Precedence: built-in defaults < TOML file < environment. Paths that depend on the user (the spool)
are computed when the configuration is built, never at import time.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ctxscope.compat import tomllib
from ctxscope.paths import state_dir
from ctxscope.shared.broker_access import BrokerAccess, InsecureBroker, require_secure
from ctxscope.shared.ids import InvalidIdentifier, device_id_from_hostname, validate_device_id

ENV_PREFIX = "CTXSCOPE_"
# env variable suffix -> field name; every field is settable from the environment
ENV_FIELDS = {
    "DEVICE": "device",
    "BROKER_HOST": "broker_host",
    "BROKER_PORT": "broker_port",
    "USERNAME": "username",
    "PASSWORD": "password",
    "TLS": "tls",
    "TLS_CA": "tls_ca",
    "INSECURE": "insecure",
    "KEEPALIVE_S": "keepalive_s",
    "SPOOL_PATH": "spool_path",
    "SPOOL_MAX_ROWS": "spool_max_rows",
    "SPOOL_MAX_BYTES": "spool_max_bytes",
    "REPLAY_S": "replay_s",
}


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field and the source."""


class AgentConfig(BaseModel):
    """Everything the agent needs to identify itself, reach the broker and bound its spool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(default_factory=lambda: device_id_from_hostname(socket.gethostname()))
    broker_host: str = Field(default="127.0.0.1", min_length=1)
    broker_port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca: Path | None = Field(default=None, description="the broker's CA certificate (default: system CAs)")
    insecure: bool = Field(
        default=False, description="allow a non-loopback broker without credentials and TLS"
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    spool_path: Path | None = Field(default=None, description="default: <state dir>/spool-<device>.sqlite")
    spool_max_rows: int = Field(default=200_000, ge=100)
    spool_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    replay_s: int = Field(
        default=120,
        ge=0,
        le=3600,
        description="after a lost connection, re-send what the broker acknowledged this many seconds before"
        " it: a crashed broker loses the queue changes since its last autosave (allowed up to 60 s) and"
        " the loss is noticed up to two keepalives late",
    )

    @field_validator("device")
    @classmethod
    def _valid_device(cls, device: str) -> str:
        try:
            return validate_device_id(device)
        except InvalidIdentifier as exc:
            raise ValueError(str(exc)) from exc

    @model_validator(mode="after")
    def _credentials_pair(self) -> AgentConfig:
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if self.tls_ca is not None and not self.tls:
            raise ValueError("tls_ca is set but tls is off")
        try:
            require_secure(
                self.broker_host, self.access(), "the agent", "`insecure = true` or CTXSCOPE_INSECURE=1"
            )
        except InsecureBroker as exc:
            raise ValueError(str(exc)) from exc
        return self

    def access(self) -> BrokerAccess:
        return BrokerAccess(self.username, self.password, self.tls, self.tls_ca, self.insecure)

    def resolved_spool_path(self) -> Path:
        return self.spool_path or state_dir() / f"spool-{self.device}.sqlite"


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> AgentConfig:
    """Build the configuration from an optional TOML file and the environment; raise ConfigError."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                values.update(tomllib.load(handle))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    env = os.environ if environ is None else environ
    for suffix, name in ENV_FIELDS.items():
        if f"{ENV_PREFIX}{suffix}" in env:
            values[name] = env[f"{ENV_PREFIX}{suffix}"]
    source = f"{path} and environment" if path else "environment"
    return validate_config(values, source)


def validate_config(values: dict[str, Any], source: str) -> AgentConfig:
    """The configuration of `values`; ConfigError in one line naming `source` and each field's problem
    (pydantic's own text spans lines and repeats the whole input)."""
    try:
        return AgentConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid agent configuration ({source}): {problems}") from exc
