"""Request, connection and response models: the one place where the contract's input rules live.

Validation runs before any network call and collects every problem, so one failed task names all of them.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from airflow_provider_kibo_cancel.exceptions import KiboConfigurationError, KiboValidationError
from airflow_provider_kibo_cancel.safety import (
    is_loopback,
    nesting_exceeds,
    text_problems,
    token_problem,
    utf16_length,
    without_userinfo,
)

# Kibo's page lists these and says "etc.": other well-formed values must stay possible.
PUBLISHED_REASONS = frozenset({"customer_changed_mind", "created_by_mistake", "other"})
OTHER_REASON = "other"
OTHER_REASON_MAX_LENGTH = 255
_REASON_PATTERN = re.compile(r"^[a-z0-9_]+$")
_REASON_MAX_LENGTH = 100
_DIGITS = re.compile(r"^[0-9]+$")
# orderId is an integer with minimum 1; the upper bound keeps it a 64-bit integer on the wire.
_MAX_ORDER_ID = 2**63 - 1
_MAX_ORDER_ID_DIGITS = len(str(_MAX_ORDER_ID))
# A bulk input is a list of ids or of flat dicts; anything nested deeper is not one, and very deep
# nesting would end in a RecursionError in the parser, in repr() or in Airflow's XCom serializer.
_MAX_ORDERS_NESTING = 3

#: The body's order id key: the specification spells it ``orderId``, Kibo's own pages ``orderID``.
OrderIdField = Literal["orderId", "orderID"]
DEFAULT_ORDER_ID_FIELD: OrderIdField = "orderId"
ORDER_ID_FIELDS: tuple[OrderIdField, ...] = ("orderId", "orderID")

CANCEL_PATH = "/api/v2/order/action/cancel"
ORDER_PATH = "/api/v2/order/{order_id}"
OAUTH_PATH = "/api/platform/applications/authtickets/oauth"
DEFAULT_AUTH_URL = "https://home.mozu.com" + OAUTH_PATH
CANCELED_STATUS = "CANCELED"


def reason_suggestion(reason: str) -> str | None:
    """The published reason ``reason`` is a near miss of (``created_by_mistak``), or None."""
    import difflib

    if reason in PUBLISHED_REASONS:
        return None
    matches = difflib.get_close_matches(reason, sorted(PUBLISHED_REASONS), n=1, cutoff=0.8)
    return matches[0] if matches else None


def _short(value: Any, limit: int = 60) -> str:
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


def parse_order_id(value: Any) -> int:
    """An integer >= 1, or a string of digits (what Jinja renders); raise ValueError naming the value."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"order_id must be an integer >= 1 or a string of digits, got {_short(value)}")
    too_large = f"order_id must be a 64-bit integer (at most {_MAX_ORDER_ID}), got "
    if isinstance(value, str):
        text = value.strip()
        if not _DIGITS.match(text):
            raise ValueError(f"order_id must be an integer >= 1 or a string of digits, got {_short(value)}")
        # Checked before int(): Python refuses to convert more than 4300 digits with its own message.
        if len(text.lstrip("0")) > _MAX_ORDER_ID_DIGITS:
            raise ValueError(f"{too_large}{len(text)} digits: {_short(value)}")
        value = int(text)
    number: int = value
    if number < 1:
        raise ValueError(f"order_id must be >= 1, got {_short(number)}")
    if number > _MAX_ORDER_ID:
        raise ValueError(f"{too_large}{_short(number)}")
    return number


def _problems(exc: ValidationError) -> list[str]:
    return [str(error["msg"]).removeprefix("Value error, ") for error in exc.errors()]


def _pairing_problems(reason: str | None, other: str | None) -> list[str]:
    """disposition_other_reason goes with 'other' and only with it."""
    if reason == OTHER_REASON:
        if not other:
            return [
                "disposition_other_reason is required when disposition_reason is 'other' "
                f"(1..{OTHER_REASON_MAX_LENGTH} characters)"
            ]
        # Kibo runs on .NET, whose strings count UTF-16 code units: an emoji is 2 of the 255.
        if utf16_length(other) > OTHER_REASON_MAX_LENGTH:
            return [
                f"disposition_other_reason must be at most {OTHER_REASON_MAX_LENGTH} characters "
                f"after trimming, got {utf16_length(other)} (counted as Kibo counts them, in UTF-16 "
                "code units: a character beyond U+FFFF, such as an emoji, counts 2)"
            ]
    elif reason and other:
        return [
            "disposition_other_reason is only allowed when disposition_reason is 'other', "
            f"got reason {reason!r} with disposition_other_reason {_short(other)}"
        ]
    return []


class CancelOrderRequest(BaseModel):
    """A validated cancel: build it with :meth:`from_raw`, send it with :meth:`body`."""

    model_config = ConfigDict(frozen=True)

    order_id: int
    disposition_reason: str
    disposition_other_reason: str | None = None

    @classmethod
    def from_raw(
        cls, order_id: Any, disposition_reason: Any, disposition_other_reason: Any = None
    ) -> CancelOrderRequest:
        """Validate raw (possibly Jinja-rendered) values; raise KiboValidationError naming every problem."""
        try:
            return cls.model_validate(
                {
                    "order_id": order_id,
                    "disposition_reason": disposition_reason,
                    "disposition_other_reason": disposition_other_reason,
                }
            )
        except ValidationError as exc:
            problems = _problems(exc)
        # The pairing check above runs only once every field is valid; name its problems anyway.
        reason = disposition_reason.strip().lower() if isinstance(disposition_reason, str) else None
        other = (
            disposition_other_reason.strip() or None if isinstance(disposition_other_reason, str) else None
        )
        if reason and _REASON_PATTERN.match(reason):
            problems += [p for p in _pairing_problems(reason, other) if p not in problems]
        raise KiboValidationError(problems)

    @field_validator("order_id", mode="plain")
    @classmethod
    def _check_order_id(cls, value: Any) -> int:
        return parse_order_id(value)

    @field_validator("disposition_reason", mode="plain")
    @classmethod
    def _check_reason(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"disposition_reason must be a string, got {_short(value)}")
        reason = value.strip().lower()
        if not reason:
            raise ValueError(
                "disposition_reason is empty; use e.g. customer_changed_mind, created_by_mistake or other"
            )
        if len(reason) > _REASON_MAX_LENGTH or not _REASON_PATTERN.match(reason):
            raise ValueError(
                "disposition_reason must be lower-case letters, digits and underscores "
                f"(e.g. customer_changed_mind), got {_short(value)}"
            )
        return reason

    @field_validator("disposition_other_reason", mode="plain")
    @classmethod
    def _check_other_reason(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"disposition_other_reason must be a string, got {_short(value)}")
        if problems := text_problems(value, "disposition_other_reason"):
            raise ValueError("; ".join(problems))
        # Blank counts as "not given": a template like "{{ params.note }}" renders "" when unused.
        return value.strip() or None

    @model_validator(mode="after")
    def _check_other_reason_matches_reason(self) -> CancelOrderRequest:
        if problems := _pairing_problems(self.disposition_reason, self.disposition_other_reason):
            raise ValueError(problems[0])  # there is never more than one
        return self

    @property
    def is_published_reason(self) -> bool:
        return self.disposition_reason in PUBLISHED_REASONS

    def body(self, order_id_field: OrderIdField = DEFAULT_ORDER_ID_FIELD) -> dict[str, Any]:
        """The JSON body as the specification gives it; the order id key as the connection spells it."""
        body: dict[str, Any] = {order_id_field: self.order_id, "dispositionReason": self.disposition_reason}
        if self.disposition_reason == OTHER_REASON:
            body["dispositionOtherReason"] = self.disposition_other_reason
        return body


@dataclass(frozen=True)
class CancelResult:
    """What a cancel ended with: the order as Kibo has it, and whether an earlier call had canceled it."""

    order: dict[str, Any]
    already_canceled: bool


INSECURE_HTTP_EXTRA = "allow_insecure_http"


def _no_credentials(value: str, field: str) -> None:
    # Any '@': a password may hold characters a URL parser splits on, so none is trusted to find it.
    if "@" in value:
        raise ValueError(
            f"{field} must not contain credentials (user:password@); put the Application Key and "
            f"Shared Secret in login and password, got {_short(without_userinfo(value.strip()))}"
        )


def _origin(value: str, field: str) -> str:
    """Accept only a plain http(s) origin (scheme, host, optional port) and return it without a slash."""
    _no_credentials(value, field)
    parts = urlsplit(value.strip())
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or not port_ok
    ):
        raise ValueError(f"{field} must be a plain http(s)://host[:port] origin, got {_short(value)}")
    return f"{parts.scheme}://{parts.netloc}"


def _url(value: str, field: str) -> str:
    _no_credentials(value, field)
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{field} must be an http(s) URL without credentials, got {_short(value)}")
    return value.strip()


def _plain_http_refused(url: str, field: str) -> str | None:
    """Why ``url`` may not be used without the unsafe opt-in, or None when it is https or loopback."""
    parts = urlsplit(url)
    if parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return None
    return (
        f"{field} {url!r} uses plain http to a host that is not this machine: the Shared Secret and "
        f"every bearer token would cross the network unencrypted. Use https, or set extra "
        f"'{INSECURE_HTTP_EXTRA}': true if you accept that risk on a network you trust (unsafe)"
    )


def _plain_http_check(base_url: str | None, auth_url: str | None, opt_in: Any) -> tuple[bool, list[str]]:
    """The unsafe opt-in's value, and the problems with plain-http URLs when it is not given."""
    field = f"extra '{INSECURE_HTTP_EXTRA}'"
    try:
        allowed = opt_in is not None and opt_in != "" and _flag(opt_in, field)
    except ValueError as exc:
        return False, [str(exc)]
    if allowed:
        return True, []
    urls = ((base_url, "host (base URL override)"), (auth_url, "extra 'auth_url'"))
    return False, [refused for url, name in urls if url and (refused := _plain_http_refused(url, name))]


def _flag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{field} must be true or false, got {_short(value)}")


def _digits(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        raise ValueError(f"{field} must be digits only and at most 64 bits, got {_short(value)}")
    if isinstance(value, bool) or not isinstance(value, int | str) or not _DIGITS.match(str(value).strip()):
        raise ValueError(f"{field} must be digits only, got {_short(value)}")
    return str(value).strip()


# Never shown by repr() or str(): tracebacks, debuggers and error trackers print those.
_SECRET_FIELDS = frozenset({"client_secret", "access_token"})


class KiboConnectionSettings(BaseModel):
    """A `kibo` connection, checked: everything the hook needs to address and authenticate calls."""

    model_config = ConfigDict(frozen=True)

    conn_id: str
    tenant_id: str
    environment: Literal["production", "sandbox"]
    site_id: str | None = None
    base_url: str
    auth_url: str
    client_id: str | None = None
    client_secret: str | None = None
    access_token: str | None = None
    timeout: float = 30.0
    max_attempts: int = 5
    backoff_base: float = 1.0
    max_retry_wait: float = 120.0
    allow_insecure_http: bool = False
    order_id_field: OrderIdField = DEFAULT_ORDER_ID_FIELD
    # The tenant budget (issue 24; hooks/tenant_budget.py): a shared cap and the Redis connection holding it.
    tenant_requests_per_second: float | None = None
    rate_limit_conn_id: str | None = None

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, ("***" if name in _SECRET_FIELDS and value else value)

    @property
    def insecure_urls(self) -> list[str]:
        """The URLs that send credentials in clear text (allowed only by the unsafe opt-in)."""
        urls = dict.fromkeys((self.base_url, self.auth_url))
        return [url for url in urls if _plain_http_refused(url, "") is not None]

    @classmethod
    def from_connection(
        cls,
        conn_id: str,
        *,
        host: str | None,
        login: str | None,
        password: str | None,
        extra: dict[str, Any],
        overrides: dict[str, Any] | None = None,
    ) -> KiboConnectionSettings:
        """Build settings from a connection's fields; raise KiboConfigurationError naming every problem."""
        problems: list[str] = []
        values: dict[str, Any] = {"conn_id": conn_id}

        def check(field: str, fn: Any) -> Any:
            try:
                return fn()
            except ValueError as exc:
                problems.append(str(exc))
                return None

        def blank(value: Any) -> bool:
            return value is None or (isinstance(value, str) and not value.strip())

        tenant = extra.get("tenant_id")
        if blank(tenant):
            problems.append("extra 'tenant_id' is required (your Kibo tenant number, e.g. 30294)")
        else:
            values["tenant_id"] = check("tenant_id", lambda: _digits(tenant, "extra 'tenant_id'"))

        environment = extra.get("environment")
        env_text = environment.strip().lower() if isinstance(environment, str) else environment
        if blank(environment):
            problems.append("extra 'environment' is required: 'production' or 'sandbox'")
        elif env_text not in ("production", "sandbox"):
            problems.append(
                f"extra 'environment' must be 'production' or 'sandbox', got {_short(environment)}"
            )
        else:
            values["environment"] = env_text

        if not blank(extra.get("order_id_field")):
            values["order_id_field"] = check("order_id_field", lambda: _order_id_field(extra))

        if not blank(extra.get("site_id")):
            values["site_id"] = check("site_id", lambda: _digits(extra["site_id"], "extra 'site_id'"))

        problems += _resolve_urls(values, host if not blank(host) else None, extra)

        from airflow_provider_kibo_cancel.hooks.tenant_budget import budget_settings

        budget_values, budget_problems = budget_settings(extra)  # tenant budget extras (issue 24)
        values.update(budget_values)
        problems += budget_problems

        login_given, password_given = not blank(login), not blank(password)
        token_given = not blank(extra.get("access_token"))
        if login_given != password_given:
            problems.append(
                "set both login (Application Key) and password (Shared Secret), or neither and use "
                "extra 'access_token'"
            )
        elif login_given:
            values["client_id"], values["client_secret"] = login, password
        elif token_given:
            values["access_token"] = check("access_token", lambda: _bearer_token(extra["access_token"]))
        else:
            problems.append(
                "no credentials: set login (Application Key) and password (Shared Secret), "
                "or extra 'access_token'"
            )

        tunables = {
            key: extra[key]
            for key in ("timeout", "max_attempts", "backoff_base", "max_retry_wait")
            if not blank(extra.get(key))
        }
        tunables.update({key: value for key, value in (overrides or {}).items() if value is not None})
        for key, value in tunables.items():
            values[key] = check(key, lambda key=key, value=value: _tunable(key, value))

        if problems:
            raise KiboConfigurationError(f"Kibo connection {conn_id!r} is not usable: " + "; ".join(problems))
        try:
            return cls(**values)
        except ValidationError as exc:  # pydantic's text would quote the values, the secret among them
            raise KiboConfigurationError(
                f"Kibo connection {conn_id!r} is not usable: invalid {_fields(exc)}"
            ) from None

    def headers(self) -> dict[str, str]:
        """Headers every API call carries, without Authorization (added per request, never logged)."""
        headers = {"x-vol-tenant": self.tenant_id, "Accept": "application/json"}
        if self.site_id:
            headers["x-vol-site"] = self.site_id
        return headers


def _order_id_field(extra: dict[str, Any]) -> OrderIdField:
    value = extra["order_id_field"]
    for field in ORDER_ID_FIELDS:
        if value == field:
            return field
    raise ValueError(
        f"extra 'order_id_field' must be 'orderId' (the default) or 'orderID', got {_short(value)}"
    )


def _bearer_token(value: Any) -> str:
    """A pre-issued token as it goes into the Authorization header; its problems told without it."""
    token = str(value).strip()
    if problem := token_problem(token):
        raise ValueError(
            f"extra 'access_token' is not a usable bearer token: {problem} (paste it on one line)"
        )
    return token


def _fields(exc: ValidationError) -> str:
    return ", ".join(sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]}))


def _resolve_urls(values: dict[str, Any], host: str | None, extra: dict[str, Any]) -> list[str]:
    """Set base_url, auth_url and allow_insecure_http in ``values``; return the problems found."""
    problems: list[str] = []

    def check(fn: Any) -> Any:
        try:
            return fn()
        except ValueError as exc:
            problems.append(str(exc))
            return None

    if host is not None:
        values["base_url"] = check(lambda: _origin(host, "host (base URL override)"))
    elif values.get("tenant_id") and values.get("environment"):
        sandbox = ".sandbox" if values["environment"] == "sandbox" else ""
        values["base_url"] = f"https://{values['tenant_id']}-translation{sandbox}.mozu.com"

    auth_url = extra.get("auth_url")
    explicit = auth_url is not None and not (isinstance(auth_url, str) and not auth_url.strip())
    if explicit:
        values["auth_url"] = check(lambda: _url(str(auth_url), "extra 'auth_url'"))
    elif host is not None and values.get("base_url"):
        values["auth_url"] = values["base_url"] + OAUTH_PATH
    else:
        values["auth_url"] = DEFAULT_AUTH_URL

    # A derived OAuth URL shares the host's origin: checked once, as the host.
    values["allow_insecure_http"], refused = _plain_http_check(
        values.get("base_url"), values["auth_url"] if explicit else None, extra.get(INSECURE_HTTP_EXTRA)
    )
    return problems + refused


# Bounds keep a typo (timeout 3000, max_attempts 100) from turning into an hour-long hang.
_TUNABLE_BOUNDS: dict[str, tuple[type, float, float]] = {
    "timeout": (float, 0.1, 600),
    "max_attempts": (int, 1, 10),
    "backoff_base": (float, 0, 60),
    "max_retry_wait": (float, 0, 3600),
}


def _tunable(key: str, value: Any) -> float | int:
    kind, low, high = _TUNABLE_BOUNDS[key]
    try:
        if isinstance(value, bool):
            raise ValueError
        number: float | int = kind(value.strip() if isinstance(value, str) else value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number from {low:g} to {high:g}, got {_short(value)}") from None
    if not low <= number <= high:
        raise ValueError(f"{key} must be from {low:g} to {high:g}, got {number:g}")
    return number


_BULK_ENTRY_KEYS = frozenset({"order_id", "disposition_reason", "disposition_other_reason"})


@dataclass(frozen=True)
class BulkCancelPlan:
    """A bulk input split up before anything is sent: unique valid cancels, invalid entries, duplicates."""

    requests: list[CancelOrderRequest]
    invalid: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]

    @property
    def total(self) -> int:
        return len(self.requests) + len(self.invalid) + len(self.duplicates)


def _json_safe(value: Any) -> Any:
    """An input echoed back in the summary (XCom is JSON): kept as is when it can be, else its repr."""
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return _short(value, limit=200)
    return value


#: Order ids as a person types them: ``1313``, ``1301, 1302``, ``1301 1302`` (digits, commas, spaces).
_ID_LIST_TEXT = re.compile(r"^[0-9]+(?:(?:\s*,\s*|\s+)[0-9]+)*$")

_HOW_TO_PASS_A_LIST = (
    "pass a list, e.g. orders=[1311, 1312], or text that is one: a JSON list (from a template, e.g. "
    "\"{{ ti.xcom_pull(task_ids='find_orders') | tojson }}\" of a list) or order ids separated by commas "
    '("1311, 1312")'
)


def _not_a_list(value: Any, what: str) -> KiboValidationError:
    return KiboValidationError(
        [f"orders must be a list of order ids or dicts, got {_short(value)} ({what}); {_HOW_TO_PASS_A_LIST}"]
    )


def _list_from_text(text: str) -> list[Any] | tuple[Any, ...]:
    """
    Orders given as text (what a template renders): a JSON list, Python's repr of a list, or order ids
    separated by commas or spaces. Anything else is refused, never iterated character by character: a
    JSON string literal or a quoted id (``'"1001"'``, ``"'9001'"``) is a quoting mistake, not orders.
    """
    stripped = text.strip()
    if _ID_LIST_TEXT.match(stripped):
        return [int(part) for part in re.split(r"[\s,]+", stripped)]
    try:
        parsed = json.loads(stripped)
    except ValueError:
        try:
            parsed = ast.literal_eval(stripped)
        except RecursionError:
            raise KiboValidationError([_too_deep()]) from None
        except (ValueError, TypeError, SyntaxError, MemoryError):
            raise _not_a_list(text, "text that is neither a list nor order ids") from None
    except RecursionError:
        raise KiboValidationError([_too_deep()]) from None
    if isinstance(parsed, list | tuple):
        return parsed
    if isinstance(parsed, str):
        raise _not_a_list(text, "a quoted string, not a list: a string is never read as orders")
    raise _not_a_list(text, f"text that holds a {_kind(parsed)}, not a list")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "single number"
    return {dict: "dict", float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _orders_sequence(orders: Any) -> Any:
    """``orders`` as something to iterate entry by entry, or a KiboValidationError saying how to pass it."""
    if isinstance(orders, bytes | bytearray | memoryview):
        try:
            orders = bytes(orders).decode("utf-8")
        except UnicodeDecodeError:
            raise _not_a_list(orders, "bytes that are not UTF-8 text") from None
    if isinstance(orders, str):
        return _list_from_text(orders)
    if isinstance(orders, int) and not isinstance(orders, bool):
        raise _not_a_list(orders, f"a single number: to cancel one order, pass [{_short(orders)}]")
    if isinstance(orders, Mapping):
        raise _not_a_list(orders, "a single dict: to cancel one order this way, pass [{...}]")
    if orders is None or isinstance(orders, bool | float) or not hasattr(orders, "__iter__"):
        raise _not_a_list(orders, f"a {_kind(orders)}")
    return orders


def _too_deep() -> str:
    return (
        f"orders is nested more than {_MAX_ORDERS_NESTING} levels deep; expected a list of order ids "
        "or of dicts with order_id, disposition_reason and disposition_other_reason"
    )


def plan_bulk_cancel(
    orders: Any, disposition_reason: Any = None, disposition_other_reason: Any = None
) -> BulkCancelPlan:
    """
    Validate every entry of a bulk cancel; the first occurrence of an order id wins, later ones are
    duplicates. An entry is an order id, or a dict with ``order_id`` and optional ``disposition_reason``
    / ``disposition_other_reason``; the defaults fill what it leaves out or gives as None (the default
    explanation only when the entry keeps the default reason).
    """
    orders = _orders_sequence(orders)
    if nesting_exceeds(orders, _MAX_ORDERS_NESTING):
        raise KiboValidationError([_too_deep()])

    requests: list[CancelOrderRequest] = []
    invalid: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    seen: set[int] = set()
    for entry in orders:
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - _BULK_ENTRY_KEYS, key=str)
            if unknown or "order_id" not in entry:
                problem = f"unknown keys {unknown}" if unknown else "order_id is missing"
                invalid.append({"input": _json_safe(entry), "errors": [problem]})
                continue
            order_id = entry["order_id"]
            # An explicit None (a CSV's `row["reason"] or None`) means "use the default", as if left out.
            own_reason = entry.get("disposition_reason")
            reason = disposition_reason if own_reason is None else own_reason
            default_other = disposition_other_reason if own_reason is None else None
            own_other = entry.get("disposition_other_reason")
            other = default_other if own_other is None else own_other
        else:
            order_id, reason, other = entry, disposition_reason, disposition_other_reason
        if reason is None:
            invalid.append(
                {
                    "input": _json_safe(entry),
                    "errors": [
                        "disposition_reason is required: give it per order or as the operator's default"
                    ],
                }
            )
            continue
        try:
            request = CancelOrderRequest.from_raw(order_id, reason, other)
        except KiboValidationError as exc:
            invalid.append({"input": _json_safe(entry), "errors": exc.problems})
            continue
        if request.order_id in seen:
            duplicates.append({"order_id": request.order_id, "input": _json_safe(entry)})
            continue
        seen.add(request.order_id)
        requests.append(request)
    return BulkCancelPlan(requests, invalid, duplicates)
