"""``firehose agent``: load the config, set up logging, run until stopped."""

from __future__ import annotations

import logging
from pathlib import Path

from firehose.agent.config import load_agent_config
from firehose.agent.runner import DEFAULT_STATE_DIR, Agent
from firehose.errors import ConfigError
from firehose.telemetry import setup_logging

log = logging.getLogger("firehose.agent")


def run(config_path: Path, state_dir: str | None, log_level: str | None) -> int:
    """Exit status: 0 after a clean stop, 1 if a flow failed or could not start, 2 for a bad config."""
    try:
        config, ignored = load_agent_config(config_path)
    except ConfigError as exc:
        setup_logging("INFO")
        log.error("Invalid configuration: %s", exc)
        return 2
    setup_logging(log_level or config.log_level or "INFO")
    if ignored:
        log.info("accepted but not used by this agent: %s", ", ".join(ignored))
    try:
        agent = Agent(config, Path(state_dir) if state_dir else DEFAULT_STATE_DIR,
                      reread=lambda: load_agent_config(config_path)[0])
    except ConfigError as exc:
        log.error("Invalid configuration: %s", exc)
        return 2
    except OSError as exc:
        log.error("Could not start: %s", exc)
        return 1
    return agent.run()
