"""``bench/reliability.py``, the kill -9 soak, run for a few cycles so the tool itself cannot rot; and its
oracle, which must see a lost or a duplicated record."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.support.killcycles import Tally
from tests.support.repo import REPO

OTHER = "## Simulated power loss\n\nWritten by another tool; the soak leaves it alone.\n"
BEGIN, END = "<!-- kill-9-soak:begin -->", "<!-- kill-9-soak:end -->"


def run_bench(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "bench" / "reliability.py"), "--out", str(out), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_oracle_counts_lost_duplicated_and_unacknowledged_records() -> None:
    tally = Tally.of([1, 2, 3, 4], Counter({1: 1, 3: 3, 4: 1, 9: 1}))
    assert tally.lost == [2]
    assert (tally.duplicated, tally.extra_copies) == (1, 2)
    assert tally.unacknowledged_delivered == 1
    assert (tally.acknowledged, tally.delivered) == (4, 4)


def test_a_short_soak_of_every_scenario_writes_its_section_and_keeps_the_others(tmp_path: Path) -> None:
    out = tmp_path / "reliability.md"
    out.write_text(f"# Reliability\n\n{BEGIN}\n## Kill -9 soak\n\nan old run\n{END}\n\n{OTHER}")
    done = run_bench(out, "--cycles", "4", "--threads", "2", "--kill-within", "1", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    text = out.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and "an old run" not in text
    assert text.startswith("# Reliability\n") and text.endswith(OTHER)
    assert "Cycles (SIGKILLs under load): 4**" in text
    assert "Lost: 0 (met: 0). Duplicated: 0 (met: 0).**" in text
    assert "python bench/reliability.py --out" in text
    for scenario in ("local", "s3", "slow-and-failing", "kinesis"):  # each one loaded and killed once
        row = re.search(rf"^\| {scenario} \| 1 \| ([0-9,]+) \|", text, re.M)
        assert row and int(row[1].replace(",", "")) > 0, scenario
    assert "Restarts that failed: 0." in text


@pytest.mark.soak
def test_soak_of_twenty_kills(tmp_path: Path) -> None:
    done = run_bench(tmp_path / "reliability.md", "--cycles", "20", timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Lost: 0 (met: 0). Duplicated: 0 (met: 0).**" in (tmp_path / "reliability.md").read_text()
