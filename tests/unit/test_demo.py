from __future__ import annotations

from pathlib import Path

from linkpool.cli.app import format_table
from linkpool.demo import run_demo


def test_demo_runs_end_to_end_and_prints_what_happened(tmp_path: Path) -> None:
    lines: list[str] = []

    result = run_demo(
        tmp_path, table=format_table, echo=lines.append, claims=40, repeats=10, threads=4
    )

    assert (result.links_added, result.lists_created) == (400, 2)
    assert result.distinct_links == 40
    assert result.repeats_same_link == 10
    assert result.written_back == 40
    assert result.lists_deleted == 2 and result.lists_left_on_qualtrics == 0
    output = "\n".join(lines)
    assert f"{result.api_calls} API calls in all" in output
    assert "40 distinct links" in output
    assert "https://" not in output  # personal links are credentials: never printed


def test_demo_starts_afresh_in_a_reused_directory(tmp_path: Path) -> None:
    run_demo(tmp_path, table=format_table, echo=lambda line: None, claims=5, repeats=1)

    again = run_demo(tmp_path, table=format_table, echo=lambda line: None, claims=5, repeats=1)

    assert again.links_added == 400
