"""docker/compose.yaml, checked offline (no container engine here can pull its images).

The file is parsed as YAML and its `${VAR:-default}` / `${VAR:?message}` references resolved as compose
does. A site is made by the product's own commands in a temporary folder; every bind mount is laid out
at its container path in a scratch root, and each collector's command line is parsed by the real
`collector run` command against that root: the options exist, and the identity, share-group secret,
CA, dashboard login and broker configuration that each container is given are there and load.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ctxscope.collector.run import run
from ctxscope.collector.security.broker_check import conf_problems, parse_conf
from ctxscope.collector.security.broker_config import collector_user
from ctxscope.collector.security.site import Site
from ctxscope.collector.web.auth import Credentials, passwd

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "compose.yaml"
COLLECTORS = ("collector-a", "collector-b")
VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution over a parsed document; a missing mandatory one fails."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if name in env:
            return env[name]
        if kind == "-":
            return rest
        raise AssertionError(f"${{{name}}} is not set ({rest or 'no default'})")

    return VARIABLE.sub(substitute, value)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A site as the compose header's steps make it."""
    site = Site(tmp_path / "site")
    site.init(["broker", "localhost"])
    site.enroll("orin-nx-01", tmp_path / "bundle", "collector.lan")
    site.add_collector("b")
    result = CliRunner().invoke(
        passwd, [str(site.root / "web-users"), "admin", "--password-env", "WEB_PW"], env={"WEB_PW": "x" * 16}
    )
    assert result.exit_code == 0, result.output
    return site


def load(site: Site) -> dict[str, Any]:
    env = {"CTXSCOPE_SITE": str(site.root), "CTXSCOPE_PG_PASSWORD": "pg-secret"}
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)


def container_root(service: dict[str, Any], volumes: set[str], root: Path) -> Path:
    """Lay the service's bind mounts out under `root` at their container paths (symlinks)."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            assert source in volumes, f"named volume {source!r} is not declared"
            continue
        host = (DOCKER / source).resolve()
        assert host.exists(), f"bind mount source {source} does not exist"
        inside = root / target.lstrip("/")
        if not inside.exists():
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.symlink_to(host)
    return root


def test_mandatory_variables_fail_loudly_when_unset(site: Site) -> None:
    with pytest.raises(AssertionError, match=r"CTXSCOPE_PG_PASSWORD\} is not set"):
        interpolate(yaml.safe_load(COMPOSE.read_text()), {"CTXSCOPE_SITE": str(site.root)})


def test_services_volumes_and_dependencies_exist(site: Site, tmp_path: Path) -> None:
    compose = load(site)
    services, volumes = compose["services"], set(compose["volumes"])
    assert set(services) == {"broker", "postgres", *COLLECTORS}
    used = set()
    for name, service in services.items():
        container_root(service, volumes, tmp_path / name)
        used |= {v.split(":")[0] for v in service.get("volumes", []) if not v.startswith((".", "/"))}
        assert set(service.get("depends_on", {})) <= set(services)
        if "build" in service:
            assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert used == volumes, "a declared volume is not used"
    published = [p.split(":") for s in services.values() for p in s.get("ports", [])]
    ports = [p[-2] for p in published]  # [address:]host port:container port
    assert len(ports) == len(set(ports)) and "8883" in ports
    for name in COLLECTORS:  # plain-HTTP dashboards: the host's loopback unless the user opens them
        assert [p.split(":")[0] for p in services[name]["ports"]] == ["127.0.0.1"]
    assert "healthcheck" in services["postgres"]
    for name, service in services.items():  # a log without a cap fills the disk of a host left alone
        logging = service.get("logging", {})
        assert logging.get("driver") in {"local", "json-file"}, f"{name}: no log driver set"
        cap = logging.get("options", {}).get("max-size", "")
        assert re.fullmatch(r"\d+[kmg]", cap), f"{name}: its log has no size cap"
    broker_conf = parse_conf((DOCKER / "mosquitto.conf").read_text())
    assert broker_conf["listener"].split()[0] == "8883" and conf_problems(broker_conf) == []


def test_two_collectors_in_one_share_group_each_with_its_own_identity(site: Site, tmp_path: Path) -> None:
    compose = load(site)
    services, volumes = compose["services"], set(compose["volumes"])
    postgres = services["postgres"]["environment"]
    params = {}
    for name in COLLECTORS:
        service = services[name]
        root = container_root(service, volumes, tmp_path / name)
        command = [root / a.lstrip("/") if a.startswith("/") else a for a in service["command"]]
        params[name] = run.make_context("run", [str(a) for a in command]).params
        p = params[name]
        assert p["broker"] == "broker:8883" and p["require_safe_broker"]
        assert (
            p["store_url"]
            == f"postgresql://{postgres['POSTGRES_USER']}@postgres:5432/{postgres['POSTGRES_DB']}"
        )
        assert service["environment"]["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"] == "pg-secret"
        in_container = Site(p["site_dir"])
        access = in_container.access(collector_user(p["collector_name"]))  # the password file is mounted
        assert (
            access.tls
            and access.ca_file is not None
            and access.ca_file.read_bytes() == site.ca_cert.read_bytes()
        )
        assert in_container.share_group(p["share_group"]) == site.share_group("fleet")
        assert not (Path(p["site_dir"]) / "ca.key").exists(), "the CA key is given to a collector"
        Credentials.load(p["web_credentials"])
        assert conf_problems(parse_conf(Path(p["broker_config"]).read_text())) == []
    a, b = (params[name] for name in COLLECTORS)
    assert a["share_group"] == b["share_group"] == "fleet"
    assert collector_user(a["collector_name"]) != collector_user(b["collector_name"])
    assert a["web"] != b["web"]
