"""Out of descriptors for new connections, the daemon keeps delivering: under a limit of 256
(systemd's ``LimitNOFILE=256``) and a crowd of 400 clients, connections are capped below the limit
(half of it stays for the spool, the ledger and delivery), the rest wait in the kernel's backlog,
nothing answers an error, and the records already acknowledged are delivered meanwhile."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from tests.support.aws import firehose_client
from tests.support.config import local_stream, write_config
from tests.support.daemon import DaemonProcess
from tests.support.delivered import read_local
from tests.support.ports import free_port
from tests.support.waiting import wait_until

CROWD = 400
LIMIT = 256


async def _crowd(port: int, hold: float) -> list[float | None]:
    """CROWD keep-alive clients asking for /healthz; per client the seconds to its answer (None: none
    within ``hold``). They keep their connections open for ``hold`` seconds."""
    loop = asyncio.get_running_loop()

    async def one() -> float | None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = loop.time()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: daemon\r\n\r\n")
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), hold)
            assert head.startswith(b"HTTP/1.1 200"), head
            answered: float | None = loop.time() - started
            await asyncio.sleep(max(0.0, hold - (loop.time() - started)))
            return answered
        except TimeoutError:
            return None
        finally:
            writer.close()

    return await asyncio.gather(*(one() for _ in range(CROWD)))


def test_a_crowd_beyond_the_descriptor_limit_waits_while_delivery_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    port = free_port()
    config = write_config(tmp_path / "c.yaml", {
        "state_dir": str(tmp_path / "state"), "port": port, "buckets": {"local": {"directory": str(out)}},
        "limits": {"idle_timeout_seconds": 60, "header_timeout_seconds": 60},
    }, [local_stream("s", interval=2)])
    daemon = DaemonProcess(config, port, tmp_path / "daemon.log", max_descriptors=LIMIT).start()
    try:
        client = firehose_client(daemon.endpoint)
        sent = [b"%04d\n" % i for i in range(1000)]
        for i in range(0, len(sent), 250):
            assert client.put_record_batch(DeliveryStreamName="s", Records=[{"Data": r} for r in sent[i:i + 250]]
                                           )["FailedPutCount"] == 0
        client.close()
        assert read_local(out) == {}, "buffered for 2 s: delivered while the crowd holds the connections"

        results: dict[str, list[float | None]] = {}
        crowd = threading.Thread(target=lambda: results.update(got=asyncio.run(_crowd(port, hold=6.0))))
        crowd.start()
        wait_until(lambda: sorted(b"".join(read_local(out).values()).splitlines(keepends=True)) == sent, timeout=20)
        crowd.join(30)
        answered = [t for t in results["got"] if t is not None and t < 4.0]
        # Taken at once: up to the cap, half the limit for the listeners together; the rest waited.
        assert 60 <= len(answered) <= LIMIT // 2, len(answered)
        assert daemon.proc is not None and daemon.proc.poll() is None

        # The crowd gone, puts are taken again, and delivered.
        time.sleep(0.5)
        client = firehose_client(daemon.endpoint)
        assert client.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"after\n"}])["FailedPutCount"] == 0
        wait_until(lambda: b"after\n" in b"".join(read_local(out).values()), timeout=20)
    finally:
        daemon.stop()
    log = daemon.log_path.read_text()
    assert "Lowered the connection caps" in log
    assert "Too many open files" not in log and "Traceback" not in log
