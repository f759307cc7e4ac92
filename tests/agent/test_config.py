"""Agent configuration: defaults, TOML, environment overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxscope.agent.config import ENV_FIELDS, ENV_PREFIX, AgentConfig, ConfigError, load_config
from ctxscope.agent.streaming import configure, parse_broker


def test_defaults_derive_device_and_spool_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "Orin_AGX.local")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    config = load_config(environ={})
    assert config.device == "orin-agx-local"
    assert config.resolved_spool_path() == tmp_path / "ctxscope" / "spool-orin-agx-local.sqlite"
    assert (config.broker_host, config.broker_port, config.tls) == ("127.0.0.1", 1883, False)


def test_toml_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('device = "jetson-7"\nbroker_host = "collector.lan"\nbroker_port = 8883\ntls = true\n')
    env = {"CTXSCOPE_BROKER_PORT": "1884", "CTXSCOPE_USERNAME": "jetson-7", "CTXSCOPE_PASSWORD": "pw"}
    config = load_config(path, environ=env)
    assert (config.device, config.broker_host, config.broker_port) == ("jetson-7", "collector.lan", 1884)
    assert (config.tls, config.username) == (True, "jetson-7")


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('device = "Not Valid!"', {}, "device: Value error, device id 'Not Valid!' is invalid"),
        ("", {"CTXSCOPE_BROKER_PORT": "70000"}, "broker_port: Input should be less than or equal to 65535"),
        ("spool_max_rows = 3", {}, "spool_max_rows: Input should be greater than or equal to 100"),
        ('password = "x"', {}, "a password needs a username"),
        ("brokr_host = 'typo'", {}, "brokr_host: Extra inputs are not permitted"),
        ("device = ", {}, "is not valid TOML"),
        ('broker_host = "10.0.0.5"', {}, "without a username, a password, TLS"),
        ('broker_host = "c.lan"\nusername = "a"\npassword = "b"', {}, "without TLS"),
        ('tls_ca = "/ca.crt"', {}, "tls_ca is set but tls is off"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(toml + "\n")
    with pytest.raises(
        ConfigError, match="agent" if "TOML" in message else "invalid agent configuration"
    ) as err:
        load_config(path, environ=env)
    assert message in str(err.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml", environ={})


def test_config_is_immutable() -> None:
    config = AgentConfig(device="a-1")
    with pytest.raises(ValueError, match="frozen"):
        config.device = "b-2"  # type: ignore[misc]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1"])
def test_loopback_broker_needs_no_credentials(host: str) -> None:
    assert AgentConfig(device="a-1", broker_host=host).access().username is None


def test_insecure_is_explicit(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('broker_host = "collector.lan"\n')
    with pytest.raises(ConfigError, match="refuses to connect"):
        load_config(path, environ={})
    assert load_config(path, environ={"CTXSCOPE_INSECURE": "true"}).insecure


def test_serve_with_an_unusable_config_exits_78_naming_the_file(tmp_path: Path) -> None:
    """The service unit does not restart on 78 (EX_CONFIG): a missing CA file once crash-looped a board
    every few seconds with a message that named no file."""
    from click.testing import CliRunner

    from ctxscope.agent.cli import agent

    missing = tmp_path / "site" / "ca.pem"
    config = tmp_path / "agent.toml"
    config.write_text(f'device = "orin-1"\ntls = true\ntls_ca = "{missing}"\n')
    result = CliRunner().invoke(agent, ["serve", "--config", str(config)])
    assert result.exit_code == 78, result.output
    assert f"tls_ca {missing}: no such file" in result.output
    result = CliRunner().invoke(agent, ["serve", "--config", str(tmp_path / "nowhere.toml")])
    assert result.exit_code == 2, result.output  # a usage error, on which the unit does not restart either


@pytest.fixture
def no_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for suffix in ENV_FIELDS:
        monkeypatch.delenv(f"{ENV_PREFIX}{suffix}", raising=False)


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ("localhost:99999", "--broker 'localhost:99999' is not HOST:PORT, or [ADDRESS]:PORT for IPv6"),
        ("10.1.2.3:1883", "(with --broker 10.1.2.3:1883): config: Value error, the agent refuses to connect"),
        ("nohost", "--broker 'nohost' is not HOST:PORT, or [ADDRESS]:PORT for IPv6"),
        ("[::1:1883", "is not HOST:PORT, or [ADDRESS]:PORT for IPv6"),
    ],
)
def test_a_bad_broker_option_is_one_line_exit_78(no_agent_env: None, broker: str, message: str) -> None:
    """Like a bad --config file: one line naming the value, not pydantic's dump of the whole input."""
    from click.testing import CliRunner

    from ctxscope.agent.cli import agent

    result = CliRunner().invoke(agent, ["maxctx", "qwen2.5-0.5b", "--tiny", "--broker", broker])
    assert result.exit_code == 78, result.output
    (line,) = result.output.strip().splitlines()
    assert message in line and "input_value" not in line


@pytest.mark.parametrize(
    ("broker", "host", "port"),
    [
        ("[::1]:1883", "::1", 1883),
        ("[fd00::5]:8883", "fd00::5", 8883),
        ("collector.lan:1884", "collector.lan", 1884),
    ],
)
def test_a_bracketed_ipv6_broker_is_an_address(no_agent_env: None, broker: str, host: str, port: int) -> None:
    """The brackets only delimit the address: kept, `[::1]` would be looked up as a host name and fail."""
    assert parse_broker(broker) == (host, port)
    if host == "::1":
        config = configure(None, broker=broker)
        assert (config.broker_host, config.broker_port) == ("::1", 1883)
