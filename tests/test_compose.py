"""docker-compose.yml stays consistent with the code it runs (Docker does not run here, so these are
the checks that can be made without it): every file it mounts exists, migrations run once before the
web replicas, the web tier can be scaled (no fixed host port on it), and the throttles trust exactly
the one proxy in front of it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_mounted_file_of_the_repository_exists() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_web_replicas_scale_behind_the_proxy_and_never_migrate() -> None:
    services = _compose()["services"]
    web, proxy = services["web"], services["proxy"]
    assert "ports" not in web, "a fixed host port on web stops `--scale web=N`"
    assert "migrate" not in web["command"], "several web replicas would race to migrate"
    assert web["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "migrate" in services["migrate"]["command"]
    assert any(port.endswith(":80") for port in proxy["ports"])
    config = (ROOT / "docker" / "nginx.conf").read_text()
    assert "server web:8000" in config and "X-Forwarded-For $remote_addr" in config


def test_throttles_trust_exactly_the_one_proxy() -> None:
    compose = _compose()
    for name in ("web", "migrate", "worker", "beat"):
        environment = compose["services"][name]["environment"]
        assert str(environment["CHORUS_NUM_PROXIES"]) == "1", name


def test_live_loop_and_machine_queues_are_both_served() -> None:
    commands = " ".join(str(s.get("command", "")) for s in _compose()["services"].values())
    assert "-Q aggregation" in commands and "-Q ml" in commands
