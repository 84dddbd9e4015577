"""The README's DAG snippet works as pasted."""

from __future__ import annotations

import re
from pathlib import Path

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv
from tests.support import kibo_connection

README = Path(__file__).parent.parent / "README.md"


def test_readme_dag_snippet_runs(airflow_env: AirflowEnv, emulator: KiboEmulator, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (snippet,) = [block for block in blocks if "@dag" in block]
    (tmp_path / "readme_dag.py").write_text(snippet)
    env = AirflowEnv(airflow_env.home, tmp_path)
    result = env.run_dag(
        "cancel_one_order", conf={"order_id": 1001}, connections={"kibo_default": kibo_connection(emulator)}
    )
    assert result.state("cancel_order") == "success", result.output[-3000:]
    assert result.xcom[("cancel_order", -1)]["orderStatus"] == "CANCELED"
    assert emulator.cancels_applied(1001) == 1
