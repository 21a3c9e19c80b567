"""The link between the daemon and a Kafka reader process, over a real socket pair."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from firehose.settings import KafkaClusterSettings
from firehose.sources.kafka_link import DONE, ENTRY, STATUS, Link, LinkClosed, split
from firehose.sources.kafka_reader import EntryRefused, KafkaReader, ReaderEnd, ReaderParams
from tests.support.waiting import wait_until


@pytest.fixture
def links() -> Iterator[tuple[Link, Link]]:
    a, b = socket.socketpair()
    ends = Link(a), Link(b)
    yield ends
    for end in ends:
        end.close()


def test_an_entry_arrives_whole_in_its_parts(links: tuple[Link, Link]) -> None:
    reader, daemon = links
    parts = [b"head", b"", b"x" * 3_000_000, bytes(range(256))]  # larger than the socket's buffer
    end = ReaderEnd(reader, lambda_step=False)
    future = end.append(parts)
    kind, meta, data = daemon.receive()
    assert kind == ENTRY and [bytes(p) for p in split(data, meta["parts"])] == parts
    daemon.send(DONE, {"entry": meta["entry"], "ok": True, "backlog": 123, "lambda": True})
    future.result(timeout=5)
    assert end.backlog == 123 and end.lambda_step is True


def test_the_answer_to_an_entry_given_up_settles_no_other(links: tuple[Link, Link]) -> None:
    """At a rebalance the reader gives up an entry the full spool has not taken and reads on; when the
    daemon answers that entry at last, the answer must not count the next one durable."""
    reader, daemon = links
    end = ReaderEnd(reader, lambda_step=False)
    given_up = end.append([b"first"])
    _, first, _ = daemon.receive()
    given_up.cancel()
    second = end.append([b"second"])
    _, meta, _ = daemon.receive()
    daemon.send(DONE, {"entry": first["entry"], "ok": True, "backlog": 0, "lambda": False})
    daemon.send(STATUS, {"backlog": 7, "lambda": False})
    wait_until(lambda: end.backlog == 7, timeout=5)  # both frames were read
    assert not second.done()
    daemon.send(DONE, {"entry": meta["entry"], "ok": False, "error": "SpoolError: disk", "backlog": 0,
                       "lambda": False})
    with pytest.raises(RuntimeError, match="SpoolError"):
        second.result(timeout=5)


def test_the_daemon_gone_cancels_what_it_did_not_answer(links: tuple[Link, Link]) -> None:
    reader, daemon = links
    end = ReaderEnd(reader, lambda_step=False)
    future = end.append([b"unanswered"])
    daemon.receive()
    daemon.close()
    wait_until(lambda: end.stopping.is_set(), timeout=5)
    assert future.cancelled() and end.daemon_gone
    assert end.append([b"later"]).cancelled()


def test_a_frame_claiming_too_much_closes_the_link(links: tuple[Link, Link]) -> None:
    reader, daemon = links
    reader.sock.sendall(struct.pack("<BII", ENTRY, 2, 1 << 31))
    with pytest.raises(LinkClosed):
        daemon.receive()


def test_an_entry_the_daemon_refuses_sends_the_reader_back_to_its_checkpoints(links: tuple[Link, Link]) -> None:
    """Not a full spool (retried by the daemon) but a failure: the consumer has read past the entry's
    records, so the reader must start reading again from the checkpoints, not go on after them."""
    reader_link, daemon = links
    end = ReaderEnd(reader_link, lambda_step=False)
    params = ReaderParams(name="s", account_id="123456789012", topic="t",
                          cluster=KafkaClusterSettings(bootstrap_servers="127.0.0.1:9"), read_from_ms=0,
                          checkpoints={0: 4}, lambda_step=False)
    reader = KafkaReader(params, end)
    reader._positions = {0: 9}
    reader._inflight = end.append([b"records 5-9"])
    reader._inflight_result = ({0: 9}, 5, 11, 0)
    _, meta, _ = daemon.receive()
    daemon.send(DONE, {"entry": meta["entry"], "ok": False, "error": "SpoolError: disk", "backlog": 0,
                       "lambda": False})
    with pytest.raises(EntryRefused, match="SpoolError"):
        reader._settle()
    assert reader._positions == reader._checkpoints == {0: 4} and reader._inflight is None
