"""A local Kibo emulator for the demo, the example DAGs, tests and benchmarks. See server.py."""

from airflow_provider_kibo_cancel.emulator.record import RECORD_LIMIT, RecordedRequest
from airflow_provider_kibo_cancel.emulator.server import Fault, KiboEmulator, make_order

__all__ = ["RECORD_LIMIT", "Fault", "KiboEmulator", "RecordedRequest", "make_order"]
