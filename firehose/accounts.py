"""Per-account state: one instance of a thing (a catalog, a shard store) per AWS account, made on first use.

Every delivery stream and Kinesis stream belongs to one account, as on AWS:
two accounts may each have a stream named ``clicks``, and neither sees the
other's. The daemon keeps each account's state apart by giving it its own
catalog and shard store; the *home* account (``account_id``, where state
lived before accounts existed) keeps the state directory's top level, every
other account a subdirectory ``accounts/<account id>/``. No state file format
changes: an account's directory looks exactly like a one-account daemon's.

Accounts that a caller brings (with authentication off, a 12-digit access key
id acts in that account) are made on first use, and each costs a catalog and
a shard store with its directory; so at most ``MAX_UNNAMED_ACCOUNTS`` of them
are made beyond those the configuration names (principals, declared streams)
or the state directory already holds. A request for one more is refused with
``LimitExceededException``, never a growth without bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from firehose.errors import LimitExceededException

T = TypeVar("T")

ACCOUNT_ID = re.compile(r"\d{12}")
#: Accounts callers may bring beyond those the configuration or the state names.
MAX_UNNAMED_ACCOUNTS = 100


def account_directory(root: Path, account: str, home: str) -> Path:
    """Where ``account``'s state lives under ``root``."""
    return root if account == home else root / "accounts" / account


def stored_accounts(root: Path) -> list[str]:
    """Accounts other than the home account that have state under ``root``."""
    directory = root / "accounts"
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and ACCOUNT_ID.fullmatch(p.name))


class PerAccount(Generic[T]):
    """``make(account)`` once per account, on first use; the home account's is made at once.

    ``get`` is for the daemon's own use (accounts it knows of); ``for_caller`` is what a request's
    account goes through, and makes at most ``MAX_UNNAMED_ACCOUNTS`` accounts outside ``named``."""

    def __init__(self, home: str, make: Callable[[str], T], *, named: Collection[str] = ()) -> None:
        self.home = home
        self._make = make
        self._named = frozenset(named)
        self._unnamed = 0
        self._items: dict[str, T] = {}
        self.get(home)

    def get(self, account: str) -> T:
        item = self._items.get(account)
        if item is None:
            item = self._items[account] = self._make(account)
        return item

    def existing(self, account: str) -> T | None:
        """The account's item if it has been made (never makes one: for resources named by ARN)."""
        return self._items.get(account)

    def for_caller(self, account: str) -> T:
        """The account a request acts in (LimitExceededException when it would be one too many)."""
        item = self._items.get(account)
        if item is not None:
            return item
        if account not in self._named:
            if self._unnamed >= MAX_UNNAMED_ACCOUNTS:
                raise LimitExceededException(
                    f"This daemon already holds {MAX_UNNAMED_ACCOUNTS} accounts that no principal or declared "
                    f"stream names; account {account} would be one more.")
            self._unnamed += 1
        return self.get(account)

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._items.items()))

    def values(self) -> list[T]:
        return list(self._items.values())
