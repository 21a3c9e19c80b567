"""Per-account state: one instance of a thing (a catalog, a shard store) per AWS account, made on first use.

Every delivery stream and Kinesis stream belongs to one account, as on AWS:
two accounts may each have a stream named ``clicks``, and neither sees the
other's. The daemon keeps each account's state apart by giving it its own
catalog and shard store; the *home* account (``account_id``, where state
lived before accounts existed) keeps the state directory's top level, every
other account a subdirectory ``accounts/<account id>/``. No state file format
changes: an account's directory looks exactly like a one-account daemon's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

ACCOUNT_ID = re.compile(r"\d{12}")


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
    """``make(account)`` once per account, on first use; the home account's is made at once."""

    def __init__(self, home: str, make: Callable[[str], T]) -> None:
        self.home = home
        self._make = make
        self._items: dict[str, T] = {}
        self.get(home)

    def get(self, account: str) -> T:
        item = self._items.get(account)
        if item is None:
            item = self._items[account] = self._make(account)
        return item

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._items.items()))

    def values(self) -> list[T]:
        return list(self._items.values())
