"""MkDocs hook: the site's front page (``index.md``) is the repository's README.

One text for both: the README is written for GitHub, where its links start at the repository
root (``docs/quickstart.md``); on the site the pages are at the root, so ``docs/`` is dropped
from every link target. ``tests/test_docs_site.py`` checks the README's links lead to pages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

PAGE = "index.md"

DOCS_LINK = re.compile(r"\]\(docs/")
"""A markdown link or image into ``docs/``: ``[x](docs/quickstart.md)``."""


def front_page(readme: str) -> str:
    """The README with its ``docs/…`` links made relative to the site's root."""
    return DOCS_LINK.sub("](", readme)


def on_files(files: Any, config: Any) -> Any:
    """MkDocs event: add the front page, made from ``README.md`` beside ``mkdocs.yml``."""
    from mkdocs.structure.files import File

    readme = Path(config["config_file_path"]).parent / "README.md"
    files.append(File.generated(config, PAGE, content=front_page(readme.read_text())))
    return files
