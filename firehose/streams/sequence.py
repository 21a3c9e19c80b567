"""Sequence numbers shaped like AWS's: 56-digit decimal strings that encode where the record is.

A sequence number packs::

    stream epoch (36 bits) | shard index (24 bits) | log entry (64 bits) | record in entry (10 bits)

scaled by a constant and added to a base, so every value is 56 digits
starting with ``49``, as AWS's are (the epoch is the stream's creation second,
made unique per store).

so within a shard they strictly increase in the order records were stored,
they are unique across the stream (the shard index differs) and across a
stream deleted and created again (the creation time differs), and a number
handed to the wrong shard can be recognised (``AT_SEQUENCE_NUMBER`` must
refuse it). Comparing two numbers of one shard as integers compares positions.
"""

from __future__ import annotations

from typing import NamedTuple

BASE = 49 * 10**54
_SCALE = 10**14 + 7
_INDEX_BITS = 10
_ENTRY_BITS = 64
_SHARD_BITS = 24
_TIME_BITS = 36
_ENTRY_SHIFT = _INDEX_BITS
_SHARD_SHIFT = _ENTRY_SHIFT + _ENTRY_BITS
_TIME_SHIFT = _SHARD_SHIFT + _SHARD_BITS
_LIMIT = 1 << (_TIME_SHIFT + _TIME_BITS)
MAX_RECORDS_PER_ENTRY = 1 << _INDEX_BITS
MAX_SHARD_INDEX = (1 << _SHARD_BITS) - 1


class Decoded(NamedTuple):
    created_s: int
    shard_index: int
    entry: int
    index: int


def prefix(epoch: int, shard_index: int, first_entry: int = 0) -> int:
    """The part every sequence number of one shard shares; log entry 0 encodes as ``first_entry``.

    Streams created since shards' StartingSequenceNumber came before their first record use
    ``first_entry`` 1, so that entry 0 is free for the StartingSequenceNumber, as on AWS, where a
    shard's first record has a larger number than the shard's StartingSequenceNumber (reading
    AFTER_SEQUENCE_NUMBER the starting number must return the first record). Older streams keep 0,
    so the numbers they issued keep naming the same records.
    """
    return (epoch << _TIME_SHIFT) + (shard_index << _SHARD_SHIFT) + (first_entry << _ENTRY_SHIFT)


def first_entry(shard_prefix: int) -> int:
    """What log entry 0 encodes as in a shard with this prefix (see ``prefix``)."""
    return (shard_prefix >> _ENTRY_SHIFT) & ((1 << _ENTRY_BITS) - 1)


def encode(shard_prefix: int, entry: int, index: int) -> str:
    return str(BASE + (shard_prefix + (entry << _ENTRY_SHIFT) + index) * _SCALE)


def decode(value: str) -> Decoded | None:
    """The fields of a sequence number this store issued; None for anything else."""
    if not value.isdigit() or len(value) != 56:
        return None
    x, rest = divmod(int(value) - BASE, _SCALE)
    if rest or not 0 <= x < _LIMIT:
        return None
    return Decoded(x >> _TIME_SHIFT, (x >> _SHARD_SHIFT) & MAX_SHARD_INDEX,
                   (x >> _ENTRY_SHIFT) & ((1 << _ENTRY_BITS) - 1), x & (MAX_RECORDS_PER_ENTRY - 1))


def is_well_formed(value: object) -> bool:
    """The API's pattern for a sequence number: ``0|([1-9]\\d{0,128})``."""
    return isinstance(value, str) and value.isdigit() and len(value) <= 129 and (value == "0" or value[0] != "0")
