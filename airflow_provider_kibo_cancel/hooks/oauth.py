"""Reading Kibo's OAuth answers without letting a token slip into a message, and without trusting
their expires_in blindly."""

from __future__ import annotations

import math
from typing import Any

import requests

from airflow_provider_kibo_cancel._compat import mask_secret

# An OAuth answer without a usable expires_in (missing, not a number, zero or negative) is trusted for
# this long: short enough that a token is not used much past a lifetime shorter than Kibo's usual
# hour, long enough that a bulk run does not fetch one per request. A 401 still refreshes it early.
FALLBACK_TOKEN_LIFETIME = 300.0
# An absurd expires_in (years, infinity) is capped: a token is re-fetched at least once a day.
MAX_TOKEN_LIFETIME = 86400.0


def token_lifetime(value: Any) -> float | None:
    """``expires_in`` in seconds, or None when it is missing, not a number, zero or negative."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if math.isnan(seconds) or seconds <= 0:
        return None
    return min(seconds, MAX_TOKEN_LIFETIME)


def answer_shape(response: requests.Response, payload: Any) -> str:
    """What an OAuth answer looked like, without a byte of its content."""
    if isinstance(payload, dict):
        return "a JSON object without a string access_token"
    if payload is not None:
        return f"JSON {type(payload).__name__}, not an object"
    content_type = response.headers.get("Content-Type", "no Content-Type")
    return f"not JSON: {content_type}, {len(response.content)} bytes"


def describe_expires_in(value: Any) -> str:
    """expires_in as a log may show it: numbers as they are, anything else only by its kind."""
    if value is None:
        return "missing"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value!r}"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return f"a JSON {type(value).__name__}"


def mask_oauth_secrets(payload: Any) -> None:
    """Register the tokens of an OAuth answer with the masker before anything can print them."""
    if isinstance(payload, dict):
        for key in ("access_token", "refresh_token"):
            value = payload.get(key)
            if isinstance(value, str) and value.strip():
                mask_secret(value)
