"""The documentation site: `make docs` builds it with warnings as errors and nitpicky references, every
internal link of the result resolves, the API reference covers the package, and a reader's browser shows
the pages as they should look (`KIBO_UPDATE_SCREENSHOT=1` refreshes the pictures in docs/)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import airflow_provider_kibo_cancel
from tests.support import debian_chromium

pytestmark = pytest.mark.once  # one build is enough: it has its own venv and lock, whichever venv runs pytest

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
# The pages a reader is shown first, and the pictures of them kept in docs/ (the last is in the README).
PICTURES = {
    "index.html": "site-home.png",
    "connection.html": "site-connection.png",
    "operators/bulk-cancel.html": "site-bulk-operator.png",
}


def source_pages() -> list[str]:
    """Every page of the site, as its document name (`operators/bulk-cancel`)."""
    return sorted(
        str(p.relative_to(DOCS).with_suffix("")) for p in DOCS.rglob("*.md") if "_build" not in p.parts
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        ["make", "docs", f"DOCS_OUT={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
    return out


class Links(HTMLParser):
    """The ids a page defines and the links (href, src) it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif (name == "href" and tag in ("a", "link")) or (name == "src" and tag in ("img", "script")):
                self.links.append(value)


def parsed(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text())
    return links


def test_the_site_builds_every_page(site: Path) -> None:
    for name in source_pages():
        assert (site / f"{name}.html").exists(), name
    assert (site / "objects.inv").exists()


def test_every_internal_link_and_anchor_resolves(site: Path) -> None:
    pages = {page: parsed(page) for page in site.rglob("*.html")}
    broken = []
    checked = 0
    for page, links in pages.items():
        for link in links.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):
                continue  # external: no network here, and not ours to keep
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parsed(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert checked > 200
    assert not broken, "\n".join(broken)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_links_resolve() -> None:
    """README.md is read on the repository's page: its relative links and their anchors must exist."""
    for target in re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text()):
        if urlsplit(target).scheme:
            continue
        path, _, anchor = target.partition("#")
        file = ROOT / path
        assert file.exists(), target
        if anchor:
            headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.MULTILINE)
            assert anchor in {github_anchor(h) for h in headings}, target


def inventory(site: Path) -> set[str]:
    """The Python objects the site documents, from Sphinx's objects.inv."""
    raw = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four header lines, then the zlib-compressed body
        header_end = raw.index(b"\n", header_end) + 1
    body = zlib.decompress(raw[header_end:]).decode()
    return {line.split()[0] for line in body.splitlines() if line.split()[1].startswith("py:")}


def public_names() -> dict[str, set[str]]:
    """Each public object of the package, by the dotted names it may be documented under (where it is
    defined, or a module that exports it): the names in a module's `__all__`, or else its names without a
    leading underscore that the module itself defines. Private modules (`_compat`) are left out."""
    names: dict[int, set[str]] = {}
    labels: dict[int, str] = {}
    package = airflow_provider_kibo_cancel
    modules = [package.__name__] + [
        info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    ]
    for module_name in modules:
        if any(part.startswith("_") and part != "__main__" for part in module_name.split(".")):
            continue
        module = importlib.import_module(module_name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            exported = [
                n
                for n, obj in vars(module).items()
                if not n.startswith("_") and getattr(obj, "__module__", None) == module_name
            ]
        for name in exported:
            obj = getattr(module, name)
            key = id(obj) if not isinstance(obj, (int, str, float)) else hash((module_name, name))
            names.setdefault(key, set()).add(f"{module_name}.{name}")
            labels.setdefault(key, f"{module_name}.{name}")
    return {labels[key]: dotted for key, dotted in names.items()}


def test_every_public_name_is_in_the_api_reference(site: Path) -> None:
    documented = inventory(site)
    public = public_names()
    assert len(public) > 100  # the walk found the package
    missing = sorted(label for label, dotted in public.items() if not dotted & documented)
    assert not missing, f"not in docs/api.md's reference: {missing}"
    # Every public class with parameters shows them: the constructors' documented parameters.
    api = (site / "api.html").read_text()
    for parameter in ("order_id", "disposition_reason", "max_concurrency", "max_orders", "kibo_conn_id"):
        assert f"<strong>{parameter}</strong>" in api, parameter


def test_a_reader_sees_the_pages_in_a_browser(site: Path, tmp_path: Path) -> None:
    # Imported here: playwright is installed for the newest Airflow's browser tests only.
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    expected = {name for name in source_pages() if name != "index"}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=debian_chromium(),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop
            for html, picture in PICTURES.items():
                page.goto((site / html).as_uri(), wait_until="load")
                # It renders: the page's own heading and text in the article, the theme's stylesheet applied.
                heading = page.locator("article h1").first
                assert heading.is_visible(), html
                assert len(page.locator("article").inner_text()) > 1000, html
                assert page.evaluate("getComputedStyle(document.body).fontFamily") != "", html
                # The navigation lists every page of the site, visible at a laptop's width.
                sidebar = page.locator(".sidebar-tree")
                assert sidebar.is_visible(), html
                hrefs = sidebar.locator("a.reference").evaluate_all("links => links.map(a => a.href)")
                listed = {
                    str(Path(unquote(urlsplit(h).path)).resolve().relative_to(site.resolve()).with_suffix(""))
                    for h in hrefs
                }
                assert expected <= listed, f"{html}: the navigation misses {sorted(expected - listed)}"
                # Code is highlighted: tokens in colours other than the block's plain text.
                colours = page.evaluate(
                    """() => {
                        const block = document.querySelector("article div.highlight pre");
                        if (!block) return null;
                        const plain = getComputedStyle(block).color;
                        const tokens = [...block.querySelectorAll("span[class]")];
                        return {plain, tokens: tokens.length,
                                coloured: tokens.filter(t => getComputedStyle(t).color !== plain).length};
                    }"""
                )
                assert colours is not None, f"{html} has no code block"
                assert colours["tokens"] > 10 and colours["coloured"] > 5, (html, colours)
                page.screenshot(path=str(tmp_path / picture))
                if os.environ.get("KIBO_UPDATE_SCREENSHOT"):
                    shutil.copy(tmp_path / picture, DOCS / picture)
        finally:
            browser.close()
