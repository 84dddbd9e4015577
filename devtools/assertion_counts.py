"""Assertions per test, before and after a change to the tests: proof that moving tests lost no check.

    python -m devtools.assertion_counts --base d4bbcdf            # a Markdown table per old test file
    python -m devtools.assertion_counts --base d4bbcdf --tests    # and one row per test

An assertion is an ``assert`` statement or a ``pytest.raises`` / ``pytest.warns`` block (or call)
anywhere inside a test function (nested helpers included; helpers outside the test are not counted).
A test is a module-level ``def test_*`` or a ``test_*`` method of a ``Test*`` class. Tests are matched
by name, which survives a move; a name found in several files on both sides is paired through git's
rename detection (old file -> new file). Names that disappeared are listed with the replacement named in
``REPLACED`` below (or "none", which fails the run).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAISES = {"raises", "warns"}

#: A test renamed or merged on purpose: old name -> the test(s) that assert what it asserted.
REPLACED: dict[str, str] = {}


@dataclass(frozen=True)
class Test:
    path: str
    name: str
    asserts: int


def _is_raises(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in RAISES
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "pytest"
    )


def count_assertions(func: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return sum(isinstance(node, ast.Assert) or _is_raises(node) for node in ast.walk(func))


def tests_in(path: str, source: str) -> list[Test]:
    found: list[Test] = []
    for node in ast.parse(source).body:
        functions: list[ast.stmt] = [node]
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            functions = node.body
        for func in functions:
            if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef) and func.name.startswith("test_"):
                found.append(Test(path, func.name, count_assertions(func)))
    return found


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def tests_at(base: str | None) -> list[Test]:
    """Every test under tests/ at commit ``base``, or in the working tree when ``base`` is None."""
    if base is None:
        files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py"))
        return [t for f in files for t in tests_in(f, (ROOT / f).read_text())]
    files = [f for f in _git("ls-tree", "-r", "--name-only", base, "tests").split() if _is_test_file(f)]
    return [t for f in files for t in tests_in(f, _git("show", f"{base}:{f}"))]


def _is_test_file(path: str) -> bool:
    return path.endswith(".py") and Path(path).name.startswith("test_")


def renames(base: str) -> dict[str, str]:
    """Old test file -> new test file, as git sees the moves since ``base`` (working tree included)."""
    moved: dict[str, str] = {}
    for line in _git("diff", "-M", "--name-status", base, "--", "tests").splitlines():
        status, *paths = line.split("\t")
        if status.startswith("R") and len(paths) == 2:
            moved[paths[0]] = paths[1]
    return moved


def pair(before: list[Test], after: list[Test], moved: dict[str, str]) -> dict[Test, list[Test]]:
    """Each test before -> the tests after that carry its name (paired by file where the name repeats)."""
    by_name: dict[str, list[Test]] = defaultdict(list)
    for test in after:
        by_name[test.name].append(test)
    names_before: dict[str, int] = defaultdict(int)
    for test in before:
        names_before[test.name] += 1
    paired: dict[Test, list[Test]] = {}
    for test in before:
        candidates = by_name.get(test.name, [])
        if names_before[test.name] > 1:
            target = moved.get(test.path, test.path)
            candidates = [c for c in candidates if c.path == target]
        paired[test] = candidates
    return paired


def report(base: str, *, per_test: bool) -> tuple[str, bool]:
    before, after = tests_at(base), tests_at(None)
    paired = pair(before, after, renames(base))
    files: dict[str, list[Test]] = defaultdict(list)
    for test in before:
        files[test.path].append(test)
    rows = [
        "| old file | new file(s) | tests before | found after | asserts before | asserts after |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    total = [0, 0, 0, 0]
    for path in sorted(files):
        tests = files[path]
        found = [t for t in tests if paired[t]]
        new_files = sorted({a.path for t in tests for a in paired[t]})
        counts = [
            len(tests),
            len(found),
            sum(t.asserts for t in tests),
            sum(a.asserts for t in tests for a in paired[t]),
        ]
        total = [x + y for x, y in zip(total, counts, strict=True)]
        rows.append(f"| {path} | {', '.join(new_files)} | " + " | ".join(map(str, counts)) + " |")
    rows.append("| **all** | | " + " | ".join(f"**{n}**" for n in total) + " |")
    ok = True
    gone = [t for t in before if not paired[t]]
    lines = [*rows, ""]
    if gone:
        lines += ["Tests whose name disappeared, and what replaces them:", ""]
        for test in gone:
            replacement = REPLACED.get(test.name, "none")
            ok = ok and replacement != "none"
            lines.append(f"- `{test.path}::{test.name}` ({test.asserts} asserts) -> {replacement}")
        lines.append("")
    old_names = {t.name for t in before}
    added = [t for t in after if t.name not in old_names]
    lines += [f"New tests: {len(added)} ({sum(t.asserts for t in added)} asserts)", ""]
    lines += [f"- `{t.path}::{t.name}` ({t.asserts})" for t in added]
    fewer = [(t, a) for t in before for a in paired[t] if a.asserts < t.asserts]
    if fewer:
        lines += ["", "Tests with fewer assertions than before:", ""]
        lines += [f"- `{a.path}::{a.name}`: {t.asserts} -> {a.asserts}" for t, a in fewer]
    if per_test:
        lines += [
            "",
            "| test | old file | new file | asserts before | after |",
            "| --- | --- | --- | ---: | ---: |",
        ]
        for test in before:
            for a in paired[test] or [Test("(gone)", test.name, 0)]:
                lines.append(f"| {test.name} | {test.path} | {a.path} | {test.asserts} | {a.asserts} |")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare the working tree with")
    parser.add_argument("--tests", action="store_true", help="also one row per test")
    args = parser.parse_args(argv)
    text, ok = report(args.base, per_test=args.tests)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
