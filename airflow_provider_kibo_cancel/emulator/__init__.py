"""A local Kibo emulator for the demo, the example DAGs, tests and benchmarks.

See server.py (state and serving), handler.py (HTTP), faults.py (fault injection) and orders.py.
"""

from airflow_provider_kibo_cancel.emulator.faults import Fault
from airflow_provider_kibo_cancel.emulator.orders import make_order
from airflow_provider_kibo_cancel.emulator.record import RECORD_LIMIT, RecordedRequest
from airflow_provider_kibo_cancel.emulator.server import KiboEmulator

__all__ = ["RECORD_LIMIT", "Fault", "KiboEmulator", "RecordedRequest", "make_order"]
