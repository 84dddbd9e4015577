"""Rewrite imports of the provider's old module paths (issue 21's moves) to the new ones, in place.

Usage: ``python -m devtools.rewrite_imports PATH [PATH ...]`` (files or folders; ``*.py`` and ``*.md``).
A ``from OLD import a, b`` is split into one import per new home of its names; a dotted reference
``OLD.name`` (in strings, docs, ``mock.patch`` targets) follows its name. Afterwards run
``ruff check --fix --select I PATH`` and ``ruff format PATH`` to sort and wrap the imports. Idempotent:
a second run changes nothing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PKG = "airflow_provider_kibo_cancel"

#: old module -> {name: new module}; "*" is where any name not listed goes.
MOVES: dict[str, dict[str, str]] = {
    f"{PKG}.models": {
        "OrderIdField": f"{PKG}.connection",
        "DEFAULT_ORDER_ID_FIELD": f"{PKG}.connection",
        "ORDER_ID_FIELDS": f"{PKG}.connection",
        "INSECURE_HTTP_EXTRA": f"{PKG}.connection_urls",
        "KiboConnectionSettings": f"{PKG}.connection",
        "CANCEL_PATH": f"{PKG}.routes",
        "ORDER_PATH": f"{PKG}.routes",
        "OAUTH_PATH": f"{PKG}.routes",
        "DEFAULT_AUTH_URL": f"{PKG}.routes",
        "BulkCancelPlan": f"{PKG}.bulk_plan",
        "plan_bulk_cancel": f"{PKG}.bulk_plan",
        "*": f"{PKG}.cancel_request",
    },
    f"{PKG}.safety": {
        "token_problem": f"{PKG}.connection",
    },
    f"{PKG}.operators.bulk_runner": {
        **{
            name: f"{PKG}.operators.outcome"
            for name in (
                "CANCELED",
                "ALREADY_CANCELED",
                "FAILED",
                "NOT_ATTEMPTED",
                "STOPPED",
                "CIRCUIT_OPEN",
                "RATE_LIMITED",
                "CREDENTIALS_REFUSED",
                "FORBIDDEN",
                "FORBIDDEN_IN_A_ROW",
                "REPEATED_BAD_REQUEST",
                "SAME_BAD_REQUEST_IN_A_ROW",
                "RATE_LIMITED_IN_A_ROW",
                "BulkCancelOutcome",
                "ProgressSnapshot",
                "compact_outcome",
                "restore_outcome",
            )
        },
        **{
            name: f"{PKG}.operators.summary"
            for name in ("failure_entry", "error_description", "error_signature", "group_failures")
        },
    },
    f"{PKG}.operators.bulk_cancel": {
        "_order_limit": f"{PKG}.operators.bulk_checks",
        "MAX_CONCURRENCY": f"{PKG}.operators.bulk_checks",
        "counted": f"{PKG}.operators.summary",
        "SUMMARY_XCOM_KEY": f"{PKG}.operators.summary",
        "MAX_ORDERS_REFUSED": f"{PKG}.operators.summary",
    },
    f"{PKG}.operators": {
        "fail_task_unless_retryable": f"{PKG}.operators.failing",
    },
}

#: names renamed on the way: (old module, old name) -> new name.
RENAMES: dict[tuple[str, str], str] = {
    (f"{PKG}.models", "_short"): "shown",
    (f"{PKG}.operators.bulk_cancel", "_order_limit"): "order_limit",
}
MOVES[f"{PKG}.models"]["_short"] = f"{PKG}.safety"

_FROM_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from[ \t]+(?P<module>[\w.]+)[ \t]+import[ \t]+"
    r"(?:\((?P<group>[^)]*)\)|(?P<line>[^\n#]*?))(?P<comment>[ \t]*#[^\n]*)?$",
    re.MULTILINE,
)


def _new_home(module: str, name: str) -> str | None:
    moves = MOVES.get(module)
    if moves is None:
        return None
    return moves.get(name, moves.get("*"))


def _rewrite_import(match: re.Match[str]) -> str:
    module = match["module"]
    if module not in MOVES:
        return match[0]
    names_text = match["group"] if match["group"] is not None else match["line"]
    names_text = re.sub(r"#[^\n]*", "", names_text)
    by_home: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in names_text.replace("\n", " ").split(","))):
        name, _, alias = item.partition(" as ")
        name = name.strip()
        home = _new_home(module, name)
        if home is None:  # a name that stays where it was
            home = module
        new_name = RENAMES.get((module, name), name)
        text = (
            f"{new_name} as {alias.strip()}"
            if alias
            else (f"{new_name} as {name}" if new_name != name else new_name)
        )
        by_home.setdefault(home, []).append(text)
    if list(by_home) == [module] and not any(
        (module, n.split(" as ")[0]) in RENAMES for n in by_home[module]
    ):
        return match[0]  # nothing of it moved: left exactly as written
    indent, comment = match["indent"], match["comment"] or ""
    lines = [f"{indent}from {home} import {', '.join(names)}" for home, names in by_home.items()]
    if lines:
        lines[0] += comment
    return "\n".join(lines)


def _rewrite_dotted(text: str) -> str:
    for module in MOVES:
        pattern = re.compile(re.escape(module) + r"\.(?P<name>[A-Za-z_]\w*)")

        def repl(match: re.Match[str], module: str = module) -> str:
            name = match["name"]
            home = _new_home(module, name)
            if home is None or f"{module}.{name}" in MOVES:  # a submodule, not a name
                return match[0]
            return f"{home}.{RENAMES.get((module, name), name)}"

        text = pattern.sub(repl, text)
    return text


def rewrite(text: str) -> str:
    return _rewrite_dotted(_FROM_IMPORT.sub(_rewrite_import, text))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    changed = 0
    for root in map(Path, argv):
        files = [root] if root.is_file() else [*root.rglob("*.py"), *root.rglob("*.md")]
        for path in files:
            if ".venv" in path.parts or "_build" in path.parts:
                continue
            old = path.read_text(encoding="utf-8")
            new = rewrite(old)
            if new != old:
                path.write_text(new, encoding="utf-8")
                changed += 1
                print(f"rewrote {path}")
    print(f"{changed} file(s) changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
