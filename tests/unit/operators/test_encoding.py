"""operators/encoding.py: the order id encoding the deferral state and the durable ledger share (its
size at 10,000 orders: tests/unit/operators/test_ledger.py)."""

from __future__ import annotations

import random

import pytest

from airflow_provider_kibo_cancel.operators.encoding import decode_ids, encode_ids


@pytest.mark.parametrize("spread", [1, 7, 1000, 100_000])
def test_order_ids_survive_the_encoding(spread: int) -> None:
    rng = random.Random(spread)
    ids = sorted({rng.randrange(1, 10_000 * spread + 2) for _ in range(3000)} | {1, 2, 3})
    assert decode_ids(encode_ids(ids)) == ids
    assert decode_ids(encode_ids(reversed(ids))) == ids
    assert encode_ids([]) == "" and decode_ids("") == []
    assert decode_ids([5, 7]) == [5, 7]  # a deferral state written before the encoding
