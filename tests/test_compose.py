"""compose/ checked without Docker: valid against the Compose Specification schema, no host
networking, no one-shot service (so ``docker compose up -d --wait`` can return 0), a health
check on every service, and image tags pinned to the versions the test servers run.

tests/data/compose-spec.json is ``schema/compose-spec.json`` of
github.com/compose-spec/compose-go/v2 v2.16.2 (Apache-2.0), the schema Docker Compose
validates files with.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose"
FILES = sorted(COMPOSE.glob("*.yml"))
SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text())
DEFAULTED = re.compile(r"\$\{\w+:-([^}]*)\}")
PINNED = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+(-[\w.]+)?$")


def load(path: Path) -> dict[str, Any]:
    """A compose file as Compose sees it with no variables set (``${X:-d}`` -> ``d``)."""
    return yaml.safe_load(DEFAULTED.sub(lambda m: m[1], path.read_text()))


def services() -> list[tuple[str, str, dict[str, Any]]]:
    return [(p.name, name, svc) for p in FILES for name, svc in load(p).get("services", {}).items()]


def server_versions() -> dict[str, str]:
    """Image name -> the version the test servers run (read from servers/)."""
    hadoop = re.search(r"<hadoop.version>([\d.]+)<", (ROOT / "servers/hdfs/pom.xml").read_text())
    cassandra = re.search(
        r"<cassandra.version>([\d.]+)<", (ROOT / "servers/cassandra/pom.xml").read_text()
    )
    ferretdb = re.search(r"FerretDB v([\d.]+)", (ROOT / "servers/ferretdb/go.mod").read_text())
    assert hadoop and cassandra and ferretdb
    return {
        "apache/hadoop": hadoop[1],
        "cassandra": cassandra[1],
        "ghcr.io/ferretdb/ferretdb": ferretdb[1],
        "redis": "7.0.15",  # Debian bookworm's redis-server, which servers/redis installs
        "memcached": "1.6.18",  # Debian bookworm's memcached, which servers/memcached installs
    }


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_valid_against_the_compose_spec(path: Path) -> None:
    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(load(path)), key=str)
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@pytest.mark.parametrize("file,name,svc", services(), ids=[f"{f}:{n}" for f, n, _ in services()])
def test_service_is_long_running_healthchecked_and_bridged(file, name, svc) -> None:
    assert svc.get("network_mode") is None, f"{file}:{name}: no host networking"
    assert svc.get("restart") != "no", f"{file}:{name}: a one-shot service breaks up --wait"
    test = svc.get("healthcheck", {}).get("test")
    assert test and test not in (["NONE"], "NONE"), f"{file}:{name}: needs a health check"
    for dep in (
        svc.get("depends_on", {}).values() if isinstance(svc.get("depends_on"), dict) else []
    ):
        assert dep.get("condition") != "service_completed_successfully"
    for port in svc.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{file}:{name}: publish on loopback only"


@pytest.mark.parametrize("file,name,svc", services(), ids=[f"{f}:{n}" for f, n, _ in services()])
def test_image_pinned_to_the_version_the_tests_run(file, name, svc) -> None:
    image = svc["image"]
    assert PINNED.match(image), f"{file}:{name}: {image} is not pinned to an exact version"
    repo, tag = image.rsplit(":", 1)
    expected = server_versions().get(repo)
    if repo == "mongo":  # real MongoDB, offered instead of FerretDB; the tests run FerretDB
        return
    assert expected, f"{file}:{name}: {repo} is not a server the tests run"
    assert tag.split("-")[0] == expected, f"{file}:{name}: {image}, tests run {expected}"


@pytest.mark.parametrize(
    "binary, args, shown",
    [("redis-server", "--version", "v={} "), ("memcached", "-V", "memcached {}")],
)
def test_the_local_servers_are_the_pinned_versions(binary: str, args: str, shown: str) -> None:
    if not shutil.which(binary):
        pytest.skip(f"{binary} is not installed here")
    out = subprocess.run([binary, args], capture_output=True, text=True).stdout
    image = binary.removesuffix("-server")
    assert shown.format(server_versions()[image]) in out


def test_the_main_file_includes_every_test_server_without_port_clashes() -> None:
    main = load(COMPOSE / "docker-compose.yml")
    included = [COMPOSE / name for name in main["include"]]
    assert all(p.exists() for p in included)
    images = {
        svc["image"].rsplit(":", 1)[0] for p in included for svc in load(p)["services"].values()
    }
    assert set(server_versions()) <= images
    host_ports: list[str] = []
    for path in included:
        for svc in load(path)["services"].values():
            host_ports += [str(p).split(":")[1] for p in svc.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports
