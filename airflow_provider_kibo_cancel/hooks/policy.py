"""The retry policy's parts, shared by every thread of one KiboHook.

- :func:`classify` sorts a ``requests`` exception by what it says about the request: never sent, maybe
  applied, or a permanent TLS problem.
- :func:`retry_after_seconds` and :func:`backoff` decide how long to wait.
- :class:`Gate` holds every thread during a 429 pause, spaces requests under a rate cap, and ends every
  wait at once when the hook is stopped.
- :class:`CircuitBreaker` stops all calls when Kibo is evidently down, so a run fails in one retry
  schedule instead of trying every order.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import requests
from urllib3.exceptions import NewConnectionError

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Every retry waits at least this long, whatever Retry-After or the backoff settings say: a
#: ``Retry-After: 0`` (or a date in the past) must not turn into a tight retry loop.
MIN_RETRY_WAIT = 0.1
#: Calls in a row that must use up all their attempts, with no answer from Kibo meanwhile, to open the
#: circuit: one bad order (or one order and its read-back) is not an outage.
BREAKER_THRESHOLD = 3
#: The longest Retry-After honoured as such (a day): a larger value is read as this, not as an overflow.
MAX_RETRY_AFTER = 86_400.0
#: How long an open circuit refuses calls before one call may probe Kibo again (long-lived hooks in
#: user code; a bulk run stops at the first opening).
BREAKER_COOLDOWN = 60.0


@dataclass(frozen=True)
class TransportFailure:
    """What one ``requests`` exception means for the retry policy."""

    reached_kibo: bool  # the request may have been applied (sent, then the answer was lost)
    permanent: bool  # retrying cannot help (TLS certificate or configuration problems)
    description: str


def classify(exc: requests.RequestException) -> TransportFailure:
    """Sort a ``requests`` exception: never sent, maybe applied, or permanent."""
    name = type(exc).__name__
    if isinstance(exc, requests.exceptions.SSLError):
        if _certificate_problem(exc):
            return TransportFailure(False, True, f"TLS error: {exc}")
        # Another TLS failure (a connection reset mid-record, say) may strike after the request went out.
        return TransportFailure(True, False, f"{name}: {_reason(exc)}")
    if isinstance(exc, requests.ConnectTimeout):
        return TransportFailure(False, False, f"{name} (connect timeout)")
    if isinstance(exc, requests.ConnectionError) and _never_connected(exc):
        return TransportFailure(False, False, f"{name} (could not connect: {_reason(exc)})")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader)):
        return TransportFailure(False, True, f"{name}: {exc}")
    # A read timeout, a connection lost mid-answer, a body cut short or undecodable: the request went
    # out, so Kibo may have applied it.
    return TransportFailure(True, False, f"{name}: {_reason(exc)}")


def _certificate_problem(exc: BaseException) -> bool:
    """An untrusted certificate or a host name that does not match it: configuration, not chance."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        pending += [a for a in current.args if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        pending += [
            e for e in (reason, current.__cause__, current.__context__) if isinstance(e, BaseException)
        ]
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or "doesn't match" in str(exc)


def _never_connected(exc: requests.ConnectionError) -> bool:
    """Connection refused, DNS failure, unreachable network: the request never left this machine."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, NewConnectionError):  # NameResolutionError is a subclass
        return True
    return isinstance(exc, requests.exceptions.ProxyError)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    text = str(reason or exc)
    return text if len(text) <= 200 else text[:200] + "..."


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: ASCII delta-seconds or an HTTP date; anything else is ignored (None)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None  # not an HTTP date (those are always GMT)
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half the ceiling fixed, half random; never below the floor."""
    ceiling = min(base * 2.0 ** (attempt - 1), cap)
    return max(MIN_RETRY_WAIT, ceiling / 2 + random.uniform(0, ceiling / 2))  # jitter, not cryptography


class HookStopped(Exception):
    """Raised inside a wait when the hook was stopped; the hook turns it into a KiboStoppedError."""


class PausedTooLong(Exception):
    """Raised by :meth:`Gate.wait` when the pause in force is longer than the caller may sleep."""

    def __init__(self, remaining: float) -> None:
        super().__init__(remaining)
        self.remaining = remaining


class Gate:
    """
    Shared by every thread using one hook: a 429 pauses them all until Retry-After has passed (including
    threads already waiting for a rate slot), then lets one request probe before the others resume; an
    optional requests-per-second cap spaces their requests out; and :meth:`stop` ends every wait at once.
    """

    def __init__(self, requests_per_second: float | None = None) -> None:
        self._lock = threading.Lock()
        self._probe_done = threading.Condition(self._lock)
        self._stopped = threading.Event()
        self._paused_until = 0.0
        # After a 429 pause, one thread probes Kibo; the others wait for its answer rather than all
        # sending into a wall that may still stand (a 429 without Retry-After says nothing of its end).
        self._probe_needed = False
        self._probe_owner: int | None = None
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._next_slot = 0.0

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        # No lock of the gate's here: stop() runs from on_kill in a SIGTERM handler, on the main thread,
        # which may hold that lock at that moment. Threads waiting for a probe look again within 1 s.
        self._stopped.set()

    def pause(self, seconds: float) -> None:
        """A 429: every thread waits ``seconds``, then one request probes before the rest resume."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)
            self._probe_needed = True

    def paused_for(self) -> float:
        """Seconds until the current 429 pause ends (0 when there is none)."""
        return max(0.0, self._paused_until - time.monotonic())

    def sleep(self, seconds: float) -> None:
        """Sleep, unless the hook is stopped first (then raise HookStopped)."""
        if self._stopped.wait(seconds):
            raise HookStopped

    def end_probe(self, *, rate_limited: bool) -> None:
        """The probe's answer is in: on anything but another 429, every waiting thread may send."""
        with self._lock:
            if self._probe_owner == threading.get_ident():
                self._probe_owner = None
                if not rate_limited:
                    self._probe_needed = False
                self._probe_done.notify_all()

    def wait(self, max_pause: float = float("inf")) -> bool:
        """
        Return when this thread may send: no pause in force, no probe under way, and its rate slot
        reached. True when this thread is the probe after a pause: it must call :meth:`end_probe`.
        A pause longer than ``max_pause`` (also one that another thread extends while this one waits)
        raises :class:`PausedTooLong` instead of being slept through.
        """
        while True:
            if self._stopped.is_set():
                raise HookStopped
            while (delay := self._paused_until - time.monotonic()) > 0:
                if delay > max_pause:
                    raise PausedTooLong(delay)
                self.sleep(min(delay, 1.0))  # re-read the pause: another thread may extend it
            with self._lock:
                if self._probe_needed and self._paused_until <= time.monotonic():
                    if self._probe_owner is None:
                        self._probe_owner = threading.get_ident()
                        return True
                    self._probe_done.wait(timeout=1.0)
                    continue  # the probe met another 429, ended, or the hook was stopped: look again
            if not self._interval:
                return False
            with self._lock:
                now = time.monotonic()
                slot = max(now, self._next_slot, self._paused_until)
                self._next_slot = slot + self._interval
            if slot > now:
                self.sleep(slot - now)
            # No 429 arrived while this thread waited for its slot; if one did, wait out its pause and
            # its probe like everyone else.
            if self._paused_until <= time.monotonic() and not self._probe_needed:
                if self._stopped.is_set():
                    raise HookStopped
                return False


class CircuitBreaker:
    """
    Opens when Kibo is evidently down: ``threshold`` calls in a row used up all their attempts on
    transport errors or 5xx answers, each with no request of this hook (any thread) getting an answer
    from Kibo since that call began. That is, Kibo failed every request, of several calls, for a whole
    retry schedule. A short blip does not open it (some request gets through within a schedule); a flaky
    Kibo does not either (answers keep resetting it), nor does one order that always fails.

    While open, every call fails at once without a request. After ``cooldown`` seconds one call may try
    again (half-open); its failure opens the circuit again, its success closes it.
    """

    def __init__(self, threshold: int = BREAKER_THRESHOLD, cooldown: float = BREAKER_COOLDOWN) -> None:
        self._lock = threading.Lock()
        self._threshold = threshold
        self._cooldown = cooldown
        self._exhausted = 0  # calls in a row that failed with no answer from Kibo during them
        self._last_answer = float("-inf")
        self._opened_at: float | None = None
        self._probing = False
        self.reason = ""

    def record_answer(self) -> None:
        """Kibo answered (any status but 5xx): it is up."""
        with self._lock:
            self._last_answer = time.monotonic()
            self._exhausted = 0
            self._opened_at = None
            self._probing = False

    def record_exhausted(self, call_started: float, reason: str) -> bool:
        """A call failed on every attempt; count it when nothing got through since it began. True if open."""
        with self._lock:
            if self._last_answer >= call_started:
                return self._opened_at is not None
            self._exhausted += 1
            if self._exhausted >= self._threshold or self._probing:
                self._opened_at = time.monotonic()
                self._probing = False
                self.reason = reason
            return self._opened_at is not None

    def end_probe(self) -> None:
        """A probe that settled nothing (stopped, refused before sending): the circuit stays open and
        the next probe waits another cool-down, rather than no probe ever being allowed again."""
        with self._lock:
            if self._probing:
                self._probing = False
                self._opened_at = time.monotonic()

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None

    def allow(self) -> bool:
        """May a call start now? False while open, except for one probe after the cooldown."""
        with self._lock:
            if self._opened_at is None:
                return True
            if not self._probing and time.monotonic() - self._opened_at >= self._cooldown:
                self._probing = True
                return True
            return False
