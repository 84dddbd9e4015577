"""The ``kibo`` connection, checked: its settings and a typed reader of its extras (URL rules:
``connection_urls.py``).

Validation runs before any network call and collects every problem, so one failed task names all of them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from airflow_provider_kibo_cancel.connection_urls import plain_http_refused, resolve_urls
from airflow_provider_kibo_cancel.exceptions import KiboConfigurationError
from airflow_provider_kibo_cancel.safety import shown

_DIGITS = re.compile(r"^[0-9]+$")


class AirflowConnection(Protocol):
    """The fields of an Airflow connection the settings are read from (``airflow.sdk.Connection``)."""

    host: str | None
    login: str | None
    password: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


def missing_connection_error(conn_id: str) -> KiboConfigurationError:
    """A connection that does not exist is configuration, not a passing fault: no task retries."""
    return KiboConfigurationError(
        f"The Kibo connection {conn_id!r} does not exist; create it (Admin -> Connections, `airflow "
        f"connections add`, or AIRFLOW_CONN_{conn_id.upper()}) or set kibo_conn_id to an existing one"
    )


#: The body's order id key: the specification spells it ``orderId``, Kibo's own pages ``orderID``.
OrderIdField = Literal["orderId", "orderID"]
DEFAULT_ORDER_ID_FIELD: OrderIdField = "orderId"
ORDER_ID_FIELDS: tuple[OrderIdField, ...] = ("orderId", "orderID")


def _digits(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        raise ValueError(f"{field} must be digits only and at most 64 bits, got {shown(value)}")
    if isinstance(value, bool) or not isinstance(value, int | str) or not _DIGITS.match(str(value).strip()):
        raise ValueError(f"{field} must be digits only, got {shown(value)}")
    return str(value).strip()


# Never shown by repr() or str(): tracebacks, debuggers and error trackers print those.
_SECRET_FIELDS = frozenset({"client_secret", "access_token"})


class KiboConnectionSettings(BaseModel):
    """A `kibo` connection, checked: everything the hook needs to address and authenticate calls."""

    # hide_input_in_errors: pydantic's messages would otherwise quote the values, the secrets among them.
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

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
    # The tenant budget (hooks/tenant_budget.py): a shared cap and the Redis connection holding it.
    tenant_requests_per_second: float | None = None
    rate_limit_conn_id: str | None = None

    @field_validator("access_token")
    @classmethod
    def _sendable_token(cls, value: str | None, info: ValidationInfo) -> str | None:
        # from_connection checks this first, with every other problem; here for settings built directly.
        if value and (error := bearer_token_error(str(info.data.get("conn_id", "?")), value)):
            raise error  # not a ValueError: pydantic passes it on as it is
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, ("***" if name in _SECRET_FIELDS and value else value)

    @property
    def insecure_urls(self) -> list[str]:
        """The URLs that send credentials in clear text (allowed only by the unsafe opt-in)."""
        urls = dict.fromkeys((self.base_url, self.auth_url))
        return [url for url in urls if plain_http_refused(url, "") is not None]

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
                f"extra 'environment' must be 'production' or 'sandbox', got {shown(environment)}"
            )
        else:
            values["environment"] = env_text

        if not blank(extra.get("order_id_field")):
            values["order_id_field"] = check("order_id_field", lambda: _order_id_field(extra))

        if not blank(extra.get("site_id")):
            values["site_id"] = check("site_id", lambda: _digits(extra["site_id"], "extra 'site_id'"))

        problems += resolve_urls(values, host if not blank(host) else None, extra)

        budget_values, budget_problems = budget_settings(extra)
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

    @classmethod
    def read(
        cls, conn_id: str, conn: AirflowConnection, overrides: dict[str, Any] | None = None
    ) -> KiboConnectionSettings:
        """:meth:`from_connection` for an Airflow connection (its ``extra`` as parsed JSON)."""
        return cls.from_connection(
            conn_id,
            host=conn.host,
            login=conn.login,
            password=conn.password,
            extra=conn.extra_dejson,
            overrides=overrides,
        )

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
        f"extra 'order_id_field' must be 'orderId' (the default) or 'orderID', got {shown(value)}"
    )


def token_problem(value: str) -> str | None:
    """
    Why a bearer token cannot go into an HTTP header (a line break, a space, a non-ASCII character), or
    None. Told by position and kind only: the token itself is never shown.
    """
    for position, char in enumerate(value.strip(), start=1):
        if not "\x21" <= char <= "\x7e":
            kind = (
                "a line break"
                if char in "\r\n"
                else "a space"
                if char.isspace()
                else "a character outside visible ASCII"
            )
            return f"the token holds {kind} at character {position} of {len(value.strip())}"
    return None


def bearer_token_error(conn_id: str, token: str) -> KiboConfigurationError | None:
    """The error for a pre-issued token that cannot go into a header, or None; the token is not shown."""
    problem = token_problem(token)
    if problem is None:
        return None
    return KiboConfigurationError(f"Kibo connection {conn_id!r} is not usable: {_unsendable(problem)}")


def _unsendable(problem: str) -> str:
    return f"extra 'access_token' is not a usable bearer token: {problem} (paste it on one line)"


def _bearer_token(value: Any) -> str:
    """A pre-issued token as it goes into the Authorization header; its problems told without it."""
    token = str(value).strip()
    if problem := token_problem(token):
        # Checked here, not at the first request: a dry run and the Test button must see it too.
        raise ValueError(_unsendable(problem))
    return token


def _fields(exc: ValidationError) -> str:
    return ", ".join(sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]}))


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
        raise ValueError(f"{key} must be a number from {low:g} to {high:g}, got {shown(value)}") from None
    if not low <= number <= high:
        raise ValueError(f"{key} must be from {low:g} to {high:g}, got {number:g}")
    return number


# Airflow's own rule for a connection id (airflow.models.connection.RE_SANITIZE_CONN_ID).
AIRFLOW_CONN_ID = re.compile(r"[\w#!()\-.:/\\]+")
# Below one request in 100 s a cap is a mistake (and its slot arithmetic overflows the clock).
MIN_TENANT_REQUESTS_PER_SECOND = 0.01


def budget_settings(extra: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The extras ``tenant_requests_per_second`` and ``rate_limit_conn_id`` as settings values, and the
    problems found (read by :meth:`KiboConnectionSettings.from_connection`; the budget itself is
    :mod:`airflow_provider_kibo_cancel.hooks.tenant_budget`'s)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    rate = extra.get("tenant_requests_per_second")
    if rate is not None and not (isinstance(rate, str) and not rate.strip()):
        try:
            number = float(rate) if not isinstance(rate, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not (number >= MIN_TENANT_REQUESTS_PER_SECOND and math.isfinite(number)):
            problems.append(
                "extra 'tenant_requests_per_second' must be a number of requests per second, at least "
                f"{MIN_TENANT_REQUESTS_PER_SECOND}, "
                f"got {str(rate)[:40]!r}"
            )
        else:
            values["tenant_requests_per_second"] = number
    conn_id = extra.get("rate_limit_conn_id")
    if conn_id is not None and not (isinstance(conn_id, str) and not conn_id.strip()):
        if isinstance(conn_id, str) and ("://" in conn_id or "@" in conn_id):
            # Not quoted: a URL given here may carry the Redis password.
            problems.append(
                "extra 'rate_limit_conn_id' takes the id of an Airflow connection to Redis (such as "
                "'kibo_redis'), not a Redis URL: put the URL in that connection"
            )
        elif not isinstance(conn_id, str) or not AIRFLOW_CONN_ID.fullmatch(conn_id.strip()):
            problems.append(
                "extra 'rate_limit_conn_id' must be the id of an Airflow connection to Redis "
                f"(letters, digits and _ - . : / # ! ( ), as Airflow allows), got {str(conn_id)[:40]!r}"
            )
        else:
            values["rate_limit_conn_id"] = conn_id.strip()
    return values, problems
