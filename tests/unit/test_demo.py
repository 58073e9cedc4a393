from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from linkpool.cli import main
from linkpool.cli.app import format_table
from linkpool.demo import DEMO_DATABASE, run_demo
from linkpool.errors import ConfigError


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


def test_demo_never_touches_a_database_it_did_not_create(tmp_path: Path) -> None:
    """`linkpool demo --dir .` where a real ledger lives must leave that ledger alone."""
    real = tmp_path / "linkpool.db"
    real.write_bytes(b"the real ledger")
    (tmp_path / "linkpool.db-wal").write_bytes(b"its wal")

    run_demo(tmp_path, table=format_table, echo=lambda line: None, claims=5, repeats=1)

    assert real.read_bytes() == b"the real ledger"
    assert (tmp_path / "linkpool.db-wal").read_bytes() == b"its wal"


def test_demo_refuses_a_file_of_its_name_without_its_marker(tmp_path: Path) -> None:
    foreign = tmp_path / DEMO_DATABASE
    foreign.write_bytes(b"somebody else's")

    with pytest.raises(ConfigError, match="did not create"):
        run_demo(tmp_path, table=format_table, echo=lambda line: None, claims=5, repeats=1)

    assert foreign.read_bytes() == b"somebody else's"


def test_demo_command_refusal_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / DEMO_DATABASE).write_bytes(b"somebody else's")

    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])

    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "did not create" in result.output
