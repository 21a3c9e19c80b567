"""``firehose agent`` exit statuses and messages for configurations it cannot run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_agent_command(config: Path, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firehose", "agent", "--config", str(config), "--state-dir",
                           str(state_dir)], capture_output=True, text=True, timeout=60)


def test_invalid_config_exits_2_naming_file_flow_and_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"flows": [{"filePattern": "/var/log/a.log", "deliveryStream": "s",
                                             "maxBufferSizeRecords": 1000}]}))
    out = run_agent_command(config, tmp_path / "state")
    assert out.returncode == 2
    assert f"{config}: flows[0] (s <- /var/log/a.log): maxBufferSizeRecords" in out.stderr


def test_checkpoints_on_a_tmpfs_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"checkpointFile": f"/dev/shm/agent-{tmp_path.name}/checkpoints",
                                  "flows": [{"filePattern": str(tmp_path / "*.log"), "deliveryStream": "s"}]}))
    out = run_agent_command(config, tmp_path / "state")
    assert out.returncode == 2
    assert "emptied at boot" in out.stderr
    assert not Path(f"/dev/shm/agent-{tmp_path.name}").exists()
