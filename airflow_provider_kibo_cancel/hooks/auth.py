"""The hook's OAuth: Kibo's bearer token as a ``requests`` auth, in the manner of dbt-cloud's ``TokenAuth``.

:class:`KiboOAuth` holds a hook's token, the lock its refresh happens under, the latch that makes refused
credentials final, and the rule that a 403 refreshes the token once per token. The token request itself
goes through the hook's retry policy and transport, like every other request of the hook.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests
from requests.auth import AuthBase

from airflow_provider_kibo_cancel import metrics
from airflow_provider_kibo_cancel.connection import KiboConnectionSettings, bearer_token_error, token_problem
from airflow_provider_kibo_cancel.exceptions import (
    KiboAuthenticationError,
    KiboResponseError,
)
from airflow_provider_kibo_cancel.hooks.decision import RetryLimits
from airflow_provider_kibo_cancel.hooks.oauth import (
    FALLBACK_TOKEN_LIFETIME,
    answer_shape,
    describe_expires_in,
    mask_oauth_secrets,
    token_lifetime,
)
from airflow_provider_kibo_cancel.hooks.responses import correlation_id, error_from
from airflow_provider_kibo_cancel.hooks.retry import RetryPolicy


class _Log(Protocol):
    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...


class Token:
    """An OAuth access token and when to stop using it."""

    def __init__(self, value: str, refresh_at: float) -> None:
        self.value = value
        self.refresh_at = refresh_at

    def fresh(self) -> bool:
        return time.monotonic() < self.refresh_at

    def __repr__(self) -> str:
        return f"Token(value='***', refresh_at={self.refresh_at!r})"


class BearerToken(AuthBase):
    """One given token on a request: the hook pins the token a call decided on to each of its attempts."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerToken('***')"


class KiboOAuth(AuthBase):
    """
    A hook's OAuth token for Kibo, shared safely by its threads; as a ``requests`` auth it puts the
    current token on a request (``hook.get_conn()`` sessions authenticate with it).

    A token is fetched with the connection's Application Key and Shared Secret (client credentials),
    reused until shortly before it expires, and refreshed when :meth:`token` is told the one in use is
    stale. Kibo refusing the credentials is final: every later :meth:`token` raises the same error without
    another OAuth request. A pre-issued token (extra ``access_token``) is used as it is, never refreshed.

    :param settings: the hook's checked connection.
    :param policy: the hook's retry policy (its 429 pause, circuit breakers and stop cover the OAuth route).
    :param limits: the connection's retry limits.
    :param post: sends one POST with a JSON body over the hook's session, without auth.
    :param log: the hook's logger.
    :raises KiboConfigurationError: a pre-issued token that cannot go into a header (a line break, say).
    """

    def __init__(
        self,
        settings: KiboConnectionSettings,
        *,
        policy: RetryPolicy,
        limits: RetryLimits,
        post: Callable[[str, dict[str, Any]], requests.Response],
        log: _Log,
    ) -> None:
        # Settings from from_connection() were checked already; a model_copy(update=...) was not, and
        # http.client would quote the token in its error.
        token = settings.access_token if not settings.client_id else None
        if token and (error := bearer_token_error(settings.conn_id, token)):
            raise error
        self._settings = settings
        self._policy = policy
        self._limits = limits
        self._post = post
        self._log = log
        self._lock = threading.Lock()
        self._token: Token | None = None
        # Refused credentials are final for this hook: every later call fails with the same error.
        self._refused: KiboAuthenticationError | None = None
        # The token fetched because Kibo answered 403 to the one before: a 403 to it is a refusal.
        self._after_403: str | None = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return BearerToken(self.token())(request)

    def __repr__(self) -> str:
        return f"KiboOAuth(conn_id={self._settings.conn_id!r}, token={self._token!r})"

    @property
    def current(self) -> Token | None:
        """The token fetched last (None before the first, and with a pre-issued token)."""
        return self._token

    @property
    def refreshable(self) -> bool:
        """False with a pre-issued token: Kibo's refusal of it is final."""
        return self._settings.client_id is not None

    @property
    def credentials_refused(self) -> bool:
        """True once Kibo refused the application key or shared secret (final)."""
        return self._refused is not None

    def token(
        self, *, stale: str | None = None, max_attempts: int | None = None, after_403: bool = False
    ) -> str:
        """
        The current token; a new one when it is near expiry or is ``stale`` (Kibo refused it with a 401,
        or with a 403 when ``after_403``, which marks the new token as fetched after a 403).
        """
        settings = self._settings
        if settings.access_token and not settings.client_id:
            return settings.access_token
        token = self._token
        if token is not None and token.fresh() and token.value != stale:
            return token.value  # the path every bulk worker takes: no lock
        with self._lock:
            if self._refused is not None:
                # One OAuth request per hook, not one per order; a copy, since threads raise it at once.
                raise self._refused.replace()
            token = self._token  # another thread may have refreshed it while this one waited
            if token is None or not token.fresh() or token.value == stale:
                metrics.token_fetch()
                try:
                    token = self._token = self._fetch(max_attempts)
                except KiboAuthenticationError as exc:
                    self._refused = exc
                    raise
                if after_403:
                    self._after_403 = token.value
            return token.value

    def should_refresh(self, status: int, token: str) -> bool:
        """
        A 401 gets a new token once per call. A 403 gets one once per token (Kibo's own clients do so: a
        token issued before a permission change is refused with 403): when the token it came with has been
        replaced meanwhile (another worker refreshed it), the call is repeated with the current one; when it
        is the token fetched after an earlier 403, the 403 is a refusal.
        """
        if not self.refreshable or status not in (401, 403):
            return False
        if status == 401:
            return True
        with self._lock:
            current = self._token.value if self._token is not None else None
            return current != token or token != self._after_403

    def _fetch(self, max_attempts: int | None) -> Token:
        settings = self._settings
        credentials = {
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "grant_type": "client_credentials",
        }
        response = self._policy.run(
            lambda: self._post(settings.auth_url, credentials),
            limits=self._limits,
            what="OAuth token request",
            route="oauth",
            order_id=None,
            max_attempts=max_attempts,
        ).response
        try:
            payload = response.json()
        except (ValueError, RecursionError):
            payload = None
        mask_oauth_secrets(payload)  # first thing after parsing, whatever the status
        if response.status_code >= 300:
            raise self._refusal(response, payload)
        value = payload.get("access_token") if isinstance(payload, dict) else None
        if isinstance(value, str):  # surrounding whitespace is no part of a token (nor of a header)
            value = value.strip()
        problem = token_problem(value) if isinstance(value, str) and value else None
        if not isinstance(value, str) or not value.strip() or problem:
            # The body is never quoted: an answer we cannot read may still hold a live token.
            raise KiboResponseError(
                "Kibo's OAuth endpoint answered without a usable access_token "
                f"({problem or answer_shape(response, payload)}; the body is not shown as it may hold "
                "credentials)",
                status=response.status_code,
                correlation_id=correlation_id(response, payload),
            )
        assert isinstance(payload, dict)
        lifetime = token_lifetime(payload.get("expires_in"))
        if lifetime is None:
            self._log.warning(
                "Kibo's OAuth answer has no usable expires_in (%s); using the token for %.0f s",
                describe_expires_in(payload.get("expires_in")),
                FALLBACK_TOKEN_LIFETIME,
            )
            lifetime = FALLBACK_TOKEN_LIFETIME
        # Refresh ahead of expiry so a long bulk run never sends a token that dies in flight.
        return Token(value, time.monotonic() + lifetime - min(300.0, lifetime / 10))

    def _refusal(self, response: requests.Response, payload: Any) -> Exception:
        """The error an OAuth answer of 300 or more means; a 400/401/403 refuses the credentials."""
        error = error_from(response, "Kibo OAuth token request failed", order_id=None)
        # Kibo's own error fields are kept; a raw excerpt of an OAuth body never is, nor
        # additionalErrorData, which could echo the request (and so the shared secret).
        message = payload.get("message") if isinstance(payload, dict) else None
        kibo_message = message if isinstance(message, str) else None
        if response.status_code in (400, 401, 403):
            return KiboAuthenticationError(
                "Kibo refused the Application Key / Shared Secret (login / password) of connection "
                f"{self._settings.conn_id!r}",
                status=error.status,
                error_code=error.error_code,
                kibo_message=kibo_message,
                correlation_id=error.correlation_id,
                items=error.items,  # Kibo's own reasons; additionalErrorData could echo the request
            )
        return error.replace(kibo_message=kibo_message, additional_error_data=None)
