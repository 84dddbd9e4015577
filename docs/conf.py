"""Sphinx configuration of the documentation site (`make docs`; pinned in requirements/docs.lock)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # autodoc imports the package from this checkout

import airflow_provider_kibo_cancel  # noqa: E402

project = "airflow-provider-kibo-cancel"
author = "airflow-provider-kibo-cancel contributors"
copyright = "the airflow-provider-kibo-cancel contributors, Apache License 2.0"
release = version = airflow_provider_kibo_cancel.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # `page.md#a-heading` links, checked like every other reference

html_theme = "furo"
html_title = f"Kibo Cancel provider {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
pygments_style = "friendly"
pygments_dark_style = "monokai"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "separated"
autodoc_default_options = {"show-inheritance": True}
autodoc_inherit_docstrings = False  # BaseOperator's and BaseHook's docstrings are Airflow's, not ours

# nitpicky (-n): every cross-reference must resolve. No network here, so no intersphinx inventories:
# references into the standard library and the third-party packages below cannot resolve and are the
# only ones let through; every reference to this package's own names must resolve.
nitpick_ignore_regex = [
    (r"py:.*", r"(airflow|requests|pydantic|urllib3|pytest|_pytest|wtforms|flask_appbuilder|redis)(\..*)?"),
    (r"py:.*", r"(collections|concurrent|datetime|http|logging|pathlib|threading|types)\..*"),
    (r"py:.*", r"(socketserver|urllib)\..*"),
    (r"py:.*", r"(typing|typing_extensions|enum|json|re|decimal|email|random)\..*"),
    (r"py:class", r"(Context|Connection|BaseOperator|BaseHook|BaseTrigger|TriggerEvent|Asset|AssetAlias)"),
    (r"py:class", r"(Path|Iterator|Iterable|Callable|Mapping|Sequence|Any|Literal|Self|TypeVar|SplitResult)"),
]


def _resolve_short_names(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Docstrings name the package's own classes briefly (:class:`KiboStoppedError`, :meth:`Gate.stop`):
    resolve such a name when exactly one documented object of the package ends with it. Anything else
    stays unresolved, and -n makes it an error."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    domain = env.get_domain("py")
    found = [
        name
        for name in domain.objects
        if name.startswith("airflow_provider_kibo_cancel.") and name.endswith("." + target)
    ]
    if len(found) != 1:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], found[0], node, contnode)


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_short_names)
