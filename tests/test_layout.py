"""The repository layout rules of DEVELOPERS.md: platform/ never shadows the standard library's
``platform`` module, and the engine and the CNN never import Django."""

from __future__ import annotations

import ast
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


def test_platform_folder_is_not_a_package() -> None:
    assert (ROOT / "platform").is_dir()
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_import_platform_is_the_standard_library_in_the_test_process() -> None:
    import platform

    assert Path(platform.__file__).resolve().parent == STDLIB
    assert platform.python_version() == ".".join(map(str, sys.version_info[:3]))


def _suite_servers() -> dict[str, str]:
    """The suite's own PostgreSQL and Redis for a subprocess, which then starts no embedded server of
    its own (one started in var/test/ by ``chorus.settings`` outlived the suite)."""
    from django.conf import settings

    from tests.conftest import _database_url

    return {"DATABASE_URL": _database_url(), "REDIS_URL": settings.REDIS_URL}


def test_import_platform_is_the_standard_library_from_the_repo_root_and_under_django() -> None:
    code = (
        "import platform, pathlib, django;"
        "import chorus.settings;"  # the Django project imports fine with platform/ on sys.path
        "print(pathlib.Path(platform.__file__).resolve().parent); print(platform.system())"
    )
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'platform'}", "PATH": "/usr/bin:/bin", "CHORUS_DATA_DIR": str(ROOT / "var" / "test"),
           **_suite_servers()}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert Path(lines[-2]) == STDLIB
    assert lines[-1] == "Linux"


def test_manage_py_keeps_the_standard_library_platform() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", "import platform; print(platform.__file__)"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "CHORUS_DATA_DIR": str(ROOT / "var" / "test"), **_suite_servers()},
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip().splitlines()[-1]).resolve().parent == STDLIB


def _imported_modules(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_engine_and_cnn_never_import_django_or_the_platform() -> None:
    platform_apps = {p.name for p in (ROOT / "platform").iterdir() if p.is_dir()}
    for package in ("aggregation", "ml"):
        imported = _imported_modules(ROOT / package)
        assert "django" not in imported and "rest_framework" not in imported and "celery" not in imported, package
        assert not imported & platform_apps, (package, imported & platform_apps)
