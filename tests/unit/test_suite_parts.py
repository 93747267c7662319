"""scripts/test.sh runs the suite in parts; every test must fall in exactly one of them.

The parts: ``tests/ansible`` (in the background) beside the fake-clock tests (``tests/unit``,
``tests/contract``, ``tests/tui`` but its live files), then every other folder of ``tests/``
with the TUI's live files under ``-m "not cluster"``, then ``tests/e2e -m cluster`` alone. A
test marked ``cluster`` outside ``tests/e2e`` would run in no part, nor would a test file
directly in ``tests/`` (the late part takes folders).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def cluster_marked_outside_e2e(tests: Path) -> list[str]:
    """Test files under ``tests`` that use the ``cluster`` marker but are not in ``e2e/``."""
    return sorted(
        str(path.relative_to(tests))
        for path in tests.rglob("*.py")
        if path != Path(__file__)  # (this file names the marker to look for it)
        and "mark.cluster" in path.read_text(errors="replace")
        and path.relative_to(tests).parts[0] != "e2e"
    )


def test_cluster_tests_live_in_tests_e2e_where_the_cluster_part_looks() -> None:
    assert cluster_marked_outside_e2e(TESTS) == []
    script = (ROOT / "scripts/test.sh").read_text()
    assert "(session cluster -m cluster tests/e2e)" in script
    assert "session playbooks tests/ansible)" in script
    assert '(session early -m "not cluster" tests/unit tests/contract tests/tui' in script
    assert '(session late -m "not cluster" "${late[@]}" "${TUI_LIVE[@]}")' in script
    live = script.split("TUI_LIVE=(", 1)[1].split(")", 1)[0].split()
    assert live and all((ROOT / path).is_file() for path in live)


def test_no_test_file_lies_directly_in_tests_where_no_part_takes_it() -> None:
    assert sorted(p.name for p in TESTS.glob("test_*.py")) == []


def test_a_cluster_test_elsewhere_is_found(tmp_path: Path) -> None:
    (tmp_path / "e2e").mkdir()
    (tmp_path / "e2e/test_ok.py").write_text("pytestmark = pytest.mark.cluster\n")
    (tmp_path / "integration").mkdir()
    (tmp_path / "integration/test_stray.py").write_text("@pytest.mark.cluster\ndef test(): ...\n")
    assert cluster_marked_outside_e2e(tmp_path) == ["integration/test_stray.py"]
