"""Find the Python interpreters the test matrix needs, or say loudly which one is missing and how to get it.

Run by the system python3 (standard library only), from the Makefile:

    python3 devtools/find_python.py 3.12            # prints the interpreter's path, or fails
    python3 devtools/find_python.py --check 3.10 3.12 3.13   # fails naming every one that is missing

A version X.Y is looked for, in this order: the variable PYTHONXY (`PYTHON312=/path/to/python make ...`),
`pythonX.Y` on PATH, `python3` on PATH, then pyenv's interpreters (`$(pyenv root)/versions/X.Y.*/bin/python`,
newest patch release first). A candidate counts only when it runs and reports version X.Y: pyenv's shims
are on PATH for every version it has, and refuse (exit 127) the ones not activated. A PYTHONXY that is set
but does not run as X.Y is an error, never passed over.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def variable(version: str) -> str:
    return "PYTHON" + version.replace(".", "")


def runs_as(candidate: str, version: str) -> bool:
    """Whether `candidate` runs and is Python `version` (X.Y)."""
    try:
        result = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and result.stdout.strip() == version


def pyenv_root() -> Path | None:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    result = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


def patch_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parts[-3]))


def candidates(version: str) -> list[str]:
    found = [shutil.which(f"python{version}"), shutil.which("python3")]
    root = pyenv_root()
    if root is not None:
        pattern = re.compile(rf"^{re.escape(version)}\.\d+$")  # 3.12.1, not 3.12-dev or 3.12.1t
        pythons = [p for p in root.glob(f"versions/{version}.*/bin/python") if pattern.match(p.parts[-3])]
        found += [str(p) for p in sorted(pythons, key=patch_key, reverse=True)]
    return [c for c in found if c]


def find(version: str) -> tuple[str | None, str]:
    """The interpreter for `version`, or None and what to tell the user."""
    name = variable(version)
    given = os.environ.get(name, "").strip()
    if given:
        if runs_as(given, version):
            return given, ""
        return None, f"{name}={given} does not run as Python {version}"
    for candidate in candidates(version):
        if runs_as(candidate, version):
            return candidate, ""
    root = pyenv_root()
    where = f"nor {root}/versions/{version}.*/bin/python" if root else "and no pyenv"
    return None, f"Python {version} not found (no python{version} on PATH that runs, {where})"


def main(argv: list[str]) -> int:
    check = argv[:1] == ["--check"]
    versions = argv[1:] if check else argv
    if not versions or (not check and len(versions) != 1):
        print(__doc__, file=sys.stderr)
        return 2
    missing = []
    for version in versions:
        path, problem = find(version)
        if path is None:
            missing.append((version, problem))
        elif check:
            print(f"Python {version}: {path}", flush=True)
        else:
            print(path, flush=True)
    for version, problem in missing:
        print(
            f"error: {problem}. The test matrix needs it and skips nothing. Install it with "
            f"`pyenv install {version}` (or your system's python{version} package), or name one: "
            f"`{variable(version)}=/path/to/python{version} make ...`",
            file=sys.stderr,
        )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
