"""The user guide cannot drift from the code: every error class is documented, every link works."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from linkpool import errors

DOCS = Path(__file__).resolve().parents[2] / "docs"


def error_classes() -> list[type[errors.LinkPoolError]]:
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, errors.LinkPoolError)
    ]


@pytest.mark.parametrize("error", error_classes(), ids=lambda error: error.__name__)
def test_errors_md_explains_every_error_class(error: type[errors.LinkPoolError]) -> None:
    text = (DOCS / "errors.md").read_text(encoding="utf-8")

    assert f"**`{error.__name__}`**" in text


def test_errors_md_documents_each_exit_code_the_classes_use() -> None:
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    codes = {error.exit_code for error in error_classes()}

    for code in codes | {0, 1, 2, 3}:
        assert re.search(rf"^\| {code} \|", text, re.MULTILINE), code


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda page: page.name)
def test_relative_links_point_at_existing_pages(page: Path) -> None:
    text = page.read_text(encoding="utf-8")

    for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", text):
        assert (DOCS / target).is_file(), f"{page.name} links to missing {target}"


def test_index_links_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")

    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert f"]({page.name}" in index, page.name


def test_the_quickstarts_token_file_reaches_linkpool_through_the_cron_example(
    tmp_path: Path,
) -> None:
    """The token.env format the quickstart gives, loaded the way crontab.example loads it,
    must put the token in the environment of the command cron starts (issue 11 point 13)."""
    import subprocess

    quickstart = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    assert "`QUALTRICS_API_TOKEN=…` in `/etc/linkpool/token.env`" in quickstart
    token_file = tmp_path / "token.env"
    token_file.write_text("QUALTRICS_API_TOKEN=tok-from-file\n", encoding="utf-8")
    crontab = (DOCS.parent / "config" / "crontab.example").read_text(encoding="utf-8")
    jobs = [line for line in crontab.splitlines() if "$LP " in line and not line.startswith("#")]
    assert len(jobs) == 3
    for job in jobs:
        command = job.split(None, 5)[5]  # after the five schedule fields
        loader = command[: command.index("$LP")].replace("/etc/linkpool/token.env", str(token_file))
        shown = subprocess.run(
            ["/bin/sh", "-c", f"{loader} env"],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert "QUALTRICS_API_TOKEN=tok-from-file" in shown.stdout.splitlines()


@pytest.mark.parametrize("error", error_classes(), ids=lambda error: error.__name__)
def test_every_error_message_is_one_line(error: type[errors.LinkPoolError]) -> None:
    """The CLI prints an error as one line: a docstring wrapped over lines must not become two."""
    try:
        instance = error()
    except TypeError:  # needs arguments: its message is built from them, on one line
        return
    assert "\n" not in str(instance)
