"""One source of truth for the supported versions: the Makefile's matrix (`make matrix`). README.md's table,
pyproject's Python classifiers and `requires-python`, and each leg's lock are held to it, and each leg
checks that it runs the Python and the Airflow it claims."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).parents[2]
REQUIREMENTS = ROOT / "requirements"


@dataclass(frozen=True)
class Leg:
    name: str  # AIRFLOW-pyPYTHON, as the Makefile names it
    kind: str  # full or core
    main: bool  # `make test`

    @property
    def airflow_minor(self) -> str:
        return self.name.split("-py")[0]

    @property
    def python(self) -> str:
        return self.name.split("-py")[1]

    @property
    def lock(self) -> Path:
        return REQUIREMENTS / ("dev.lock" if self.main else f"airflow-{self.name}.lock")

    @property
    def airflow(self) -> str:
        """The exact Airflow release the leg pins in its lock."""
        pins = re.findall(r"^apache-airflow==(\S+)$", self.lock.read_text(), re.MULTILINE)
        assert len(pins) == 1, f"{self.lock.name}: {pins}"
        return str(pins[0])

    def row(self, newest: str) -> str:
        if self.main:
            tests = "everything (`make test`)"
        elif self.kind == "core":
            tests = "the core subset"
        elif self.airflow_minor == newest:
            tests = "the whole suite"
        else:
            tests = "the whole suite but `newest_only`"
        return f"| {self.airflow} | {self.python} | {tests} |"


@cache
def legs() -> tuple[Leg, ...]:
    out = subprocess.run(
        ["make", "--no-print-directory", "-s", "matrix"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert lines and all(len(fields) == 2 and fields[1] in ("full", "core") for fields in lines), out
    return tuple(Leg(name, kind, main=index == 0) for index, (name, kind) in enumerate(lines))


def newest() -> str:
    return legs()[0].airflow_minor  # the main leg is the newest Airflow


def readme_table() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Supported versions", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_the_readme_table_is_the_matrix() -> None:
    expected = [leg.row(newest()) for leg in legs()]
    assert readme_table() == expected, "README.md's Supported versions table should read:\n" + "\n".join(
        ["| Airflow | Python | tests (`make test-matrix`) |", "| --- | --- | --- |", *expected]
    )


def test_the_classifiers_and_requires_python_are_the_pythons_tested() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: 3."
    declared = sorted(
        (
            c.removeprefix("Programming Language :: Python :: ")
            for c in project["classifiers"]
            if c.startswith(prefix)
        ),
        key=lambda v: tuple(map(int, v.split("."))),
    )
    tested = sorted({leg.python for leg in legs()}, key=lambda v: tuple(map(int, v.split("."))))
    assert declared == tested
    assert project["requires-python"] == f">={tested[0]}"
    # Every Python is tested on the newest Airflow.
    assert {leg.python for leg in legs() if leg.airflow_minor == newest()} == set(tested)


def test_each_lock_is_resolved_for_its_leg() -> None:
    for leg in legs():
        header = leg.lock.read_text().splitlines()[:2]
        assert f"--python-version {leg.python} " in header[1], (leg.lock.name, header)
        assert leg.airflow.startswith(f"{leg.airflow_minor}."), (leg.lock.name, leg.airflow)


def test_this_leg_runs_the_python_and_airflow_it_claims() -> None:
    name = os.environ.get("KIBO_MATRIX_LEG")
    if not name:
        pytest.skip("not run by a matrix leg (`make test` and `make test-airflow-*` set KIBO_MATRIX_LEG)")
    (leg,) = [leg for leg in legs() if leg.name == name]
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" == leg.python
    assert version("apache-airflow") == leg.airflow
