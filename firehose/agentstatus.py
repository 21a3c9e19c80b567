"""The agents' flows for the console: the daemon reads each configured agent's ``/status`` over HTTP.

The agent is a separate process (often on another host, under another user), so the daemon does
not read its files: it asks the agent's own listener (``metrics.port`` in agent.json), at the URLs
``console.agents`` lists, when the page asks ``/console/api/agents``. The page reads only the
daemon. Each agent is asked at once with a short timeout and a bounded answer, so an agent that
is down or slow makes its entry say so, not the page hang.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

#: How long one agent may take to answer.
TIMEOUT_S = 2.0
#: The largest status document read from an agent (a flow lists at most 50 files).
MAX_BYTES = 1024 * 1024


async def read_agents(http: httpx.AsyncClient, urls: list[str]) -> dict[str, Any]:
    """``{"agents": [{"url", "ok", "error"?, "agent"?, "flows"}]}``, in the order configured."""
    return {"agents": list(await asyncio.gather(*(_read(http, url) for url in urls)))}


async def _read(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": url, "ok": False, "flows": []}
    try:
        async with asyncio.timeout(TIMEOUT_S):
            async with http.stream("GET", f"{url}/status", headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    entry["error"] = f"HTTP {response.status_code} from {url}/status"
                    return entry
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        entry["error"] = f"the status from {url} is larger than {MAX_BYTES} bytes"
                        return entry
    except TimeoutError:
        entry["error"] = f"{url} did not answer within {TIMEOUT_S:g} s"
        return entry
    except httpx.HTTPError as exc:
        entry["error"] = f"cannot read {url}/status: {type(exc).__name__}: {exc}"
        return entry
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("flows"), list):
        entry["error"] = f"{url}/status is not an agent's status (JSON with flows)"
        return entry
    entry.update(ok=True, agent=doc.get("agent"), flows=doc["flows"])
    return entry
