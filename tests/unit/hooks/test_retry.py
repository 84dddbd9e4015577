"""hooks/retry.py: the policy at the hook against the emulator, and what a call's record says after each
kind of attempt (the decision itself: test_decision.py)."""

from __future__ import annotations

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import KiboServerError, KiboTransportError
from tests.support import Connect


def test_a_5xx_to_every_attempt_fails_saying_the_cancel_may_have_applied(
    emulator: KiboEmulator, connect: Connect
) -> None:
    emulator.inject("status", status=503, times=None)
    emulator.inject("status", status=503, endpoint="get_order", times=None)
    with pytest.raises(KiboServerError) as caught:
        connect(emulator, max_attempts=2).cancel_order(1001, "created_by_mistake")
    assert len(emulator.requests_to("cancel")) == 2
    assert caught.value.may_have_applied  # a 5xx may have been applied: the record says so


def test_a_refused_connection_was_never_sent_to_kibo(connect: Connect) -> None:
    with KiboEmulator() as gone:
        url = gone.url
    hook = connect(url, login="", password="", access_token="t0k", max_attempts=2)
    with pytest.raises(KiboTransportError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    assert not caught.value.may_have_applied
    assert "failed after 2 attempt(s)" in str(caught.value)
