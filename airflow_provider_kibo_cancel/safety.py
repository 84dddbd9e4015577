"""Small, dependency-free checks that keep secrets out of messages and hostile text out of requests.

Used by the models (connection and input rules), the hook and the emulator; kept apart so each rule has
one definition and the connection and request modules stay about the contract's rules.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from typing import Any

# Tab and newline are ordinary in a free-text note; every other C0/C1 control character, DEL included,
# is refused: they corrupt logs and terminals and have no place in an explanation shown to people.
_ALLOWED_CONTROLS = frozenset("\t\n")
# Unicode's explicit embedding, override and isolate controls ("Trojan Source", CVE-2021-42574): they make
# text display in an order other than the one it is stored in. The implicit marks (U+200E, U+200F,
# U+061C) are left alone: right-to-left languages use them in ordinary text.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_CONTROL_NAMES = {"\t": "TAB", "\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\x00": "NULL", "\x1b": "ESCAPE"}
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<userinfo>[^@]*)@")

LOOPBACK_NAMES = frozenset({"localhost"})


def without_userinfo(text: str) -> str:
    """A URL as it may be echoed: anything before the last ``@`` of it (user, password) becomes ``***``.

    Deliberately blunt: a password may hold '/', ':' or '#' that a URL parser would split on, so
    everything up to the last '@' is dropped rather than only what a parser calls the userinfo.
    """
    if "@" not in text:
        return text
    cut = text.rfind("@") + 1
    match = _USERINFO.match(text[:cut])
    scheme = (match.group("scheme") or "") if match else ""
    return f"{scheme}***@{text[cut:]}"


def is_loopback(hostname: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves this machine."""
    name = hostname.strip("[]").rstrip(".").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def character_name(char: str) -> str:
    """'U+202E RIGHT-TO-LEFT OVERRIDE': how an error names a character without printing it."""
    name = unicodedata.name(char, "") or _CONTROL_NAMES.get(char, "")
    return f"U+{ord(char):04X} {name}".rstrip()


def text_problems(text: str, field: str) -> list[str]:
    """Control characters, bidirectional controls and lone surrogates in free text, each named once."""
    problems: list[str] = []
    seen: set[str] = set()
    for position, char in enumerate(text, start=1):
        if char in seen:
            continue
        if char in BIDI_CONTROLS:
            kind = "a bidirectional control character, which can disguise what the text says"
        elif unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS:
            kind = "a control character (only tab and newline are allowed)"
        elif 0xD800 <= ord(char) <= 0xDFFF:
            kind = "half of a surrogate pair, which is not valid Unicode text"
        else:
            continue
        seen.add(char)
        problems.append(f"{field} contains {character_name(char)} at position {position}: {kind}")
    return problems


def utf16_length(text: str) -> int:
    """Length as .NET (Kibo's platform) counts it: UTF-16 code units, so an emoji counts 2."""
    return sum(2 if ord(char) > 0xFFFF else 1 for char in text)


def nesting_exceeds(value: Any, limit: int) -> bool:
    """True when lists, tuples, sets or dicts nest deeper than ``limit``; iterative, so never recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def shown(value: Any, limit: int = 60) -> str:
    """``value`` as it may be quoted in a message: repr() of its head, never megabytes, never raising."""
    if isinstance(value, str) and len(value) > limit:
        value = value[: limit + 1]  # repr() of the head only: an echoed value may be megabytes long
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        # repr() of an int past 4300 digits raises; the size is what matters anyway.
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # nested too deeply to print, or a hostile __repr__
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."
