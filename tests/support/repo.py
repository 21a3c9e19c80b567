"""Where the repository's files are, for tests that read what it ships (config, systemd units, transforms)."""

from __future__ import annotations

from pathlib import Path

#: The repository's root: the directory holding ``tests/``, ``firehose/`` and ``pyproject.toml``.
REPO = Path(__file__).resolve().parents[2]
