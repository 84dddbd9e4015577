"""A local Kibo emulator for the demo, the example DAGs, tests and benchmarks. See server.py."""

from airflow_provider_kibo_cancel.emulator.server import Fault, KiboEmulator, RecordedRequest, make_order

__all__ = ["Fault", "KiboEmulator", "RecordedRequest", "make_order"]
