"""The ``kibo`` connection's URL rules: the API and OAuth origins, and the plain-http opt-in.

Every rule raises or returns a problem naming the field, never a credential (a URL's user:password@ is
cut before it is shown).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow_provider_kibo_cancel.routes import DEFAULT_AUTH_URL, OAUTH_PATH
from airflow_provider_kibo_cancel.safety import is_loopback, shown, without_userinfo

INSECURE_HTTP_EXTRA = "allow_insecure_http"


def no_credentials(value: str, field: str) -> None:
    """Refuse a URL that carries credentials, without showing them."""
    # Any '@': a password may hold characters a URL parser splits on, so none is trusted to find it.
    if "@" in value:
        raise ValueError(
            f"{field} must not contain credentials (user:password@); put the Application Key and "
            f"Shared Secret in login and password, got {shown(without_userinfo(value.strip()))}"
        )


def origin(value: str, field: str) -> str:
    """Accept only a plain http(s) origin (scheme, host, optional port) and return it without a slash."""
    no_credentials(value, field)
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
        raise ValueError(f"{field} must be a plain http(s)://host[:port] origin, got {shown(value)}")
    return f"{parts.scheme}://{parts.netloc}"


def url(value: str, field: str) -> str:
    """Accept an http(s) URL without credentials; return it stripped."""
    no_credentials(value, field)
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{field} must be an http(s) URL without credentials, got {shown(value)}")
    return value.strip()


def plain_http_refused(url: str, field: str) -> str | None:
    """Why ``url`` may not be used without the unsafe opt-in, or None when it is https or loopback."""
    parts = urlsplit(url)
    if parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return None
    return (
        f"{field} {url!r} uses plain http to a host that is not this machine: the Shared Secret and "
        f"every bearer token would cross the network unencrypted. Use https, or set extra "
        f"'{INSECURE_HTTP_EXTRA}': true if you accept that risk on a network you trust (unsafe)"
    )


def plain_http_check(base_url: str | None, auth_url: str | None, opt_in: Any) -> tuple[bool, list[str]]:
    """The unsafe opt-in's value, and the problems with plain-http URLs when it is not given."""
    field = f"extra '{INSECURE_HTTP_EXTRA}'"
    try:
        allowed = opt_in is not None and opt_in != "" and flag(opt_in, field)
    except ValueError as exc:
        return False, [str(exc)]
    if allowed:
        return True, []
    urls = ((base_url, "host (base URL override)"), (auth_url, "extra 'auth_url'"))
    return False, [refused for url, name in urls if url and (refused := plain_http_refused(url, name))]


def flag(value: Any, field: str) -> bool:
    """A true/false extra, as a JSON boolean or the strings "true" and "false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{field} must be true or false, got {shown(value)}")


def resolve_urls(values: dict[str, Any], host: str | None, extra: dict[str, Any]) -> list[str]:
    """Set base_url, auth_url and allow_insecure_http in ``values``; return the problems found."""
    problems: list[str] = []

    def check(fn: Any) -> Any:
        try:
            return fn()
        except ValueError as exc:
            problems.append(str(exc))
            return None

    if host is not None:
        values["base_url"] = check(lambda: origin(host, "host (base URL override)"))
    elif values.get("tenant_id") and values.get("environment"):
        sandbox = ".sandbox" if values["environment"] == "sandbox" else ""
        values["base_url"] = f"https://{values['tenant_id']}-translation{sandbox}.mozu.com"

    auth_url = extra.get("auth_url")
    explicit = auth_url is not None and not (isinstance(auth_url, str) and not auth_url.strip())
    if explicit:
        values["auth_url"] = check(lambda: url(str(auth_url), "extra 'auth_url'"))
    elif host is not None and values.get("base_url"):
        values["auth_url"] = values["base_url"] + OAUTH_PATH
    else:
        values["auth_url"] = DEFAULT_AUTH_URL

    # A derived OAuth URL shares the host's origin: checked once, as the host.
    values["allow_insecure_http"], refused = plain_http_check(
        values.get("base_url"), values["auth_url"] if explicit else None, extra.get(INSECURE_HTTP_EXTRA)
    )
    return problems + refused
