"""The README's DAG snippet works as pasted, and its user project is the one the release test runs."""

from __future__ import annotations

import re
from pathlib import Path

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv
from tests import user_project
from tests.support import kibo_connection

README = Path(__file__).parent.parent / "README.md"


def test_readme_dag_snippet_runs(airflow_env: AirflowEnv, emulator: KiboEmulator, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (snippet,) = [block for block in blocks if "def cancel_one_order" in block]
    (tmp_path / "readme_dag.py").write_text(snippet)
    env = AirflowEnv(airflow_env.home, tmp_path)
    result = env.run_dag(
        "cancel_one_order", conf={"order_id": 1001}, connections={"kibo_default": kibo_connection(emulator)}
    )
    assert result.state("cancel_order") == "success", result.output[-3000:]
    assert result.xcom[("cancel_order", -1)]["orderStatus"] == "CANCELED"
    assert emulator.cancels_applied(1001) == 1


def test_readme_shows_the_user_project_the_release_test_runs() -> None:
    """tests/test_release.py runs these files' pytest against the built wheel; the README shows them."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    for name, text in user_project.FILES.items():
        assert f"# {name}\n{text}" in blocks, f"README does not show {name} as tests/user_project.py has it"
