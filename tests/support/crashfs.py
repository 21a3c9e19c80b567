"""A recording file-system layer and the on-disk states a power cut may leave (as ALICE and CrashMonkey).

Used only in tests. ``Recorder`` patches the ``os`` calls the storage toolkit makes (``open``,
``write``/``writev``/``pwrite``, ``fsync``/``fdatasync``, ``ftruncate``/``truncate``, ``rename``/``replace``,
``unlink``, ``mkdir``/``rmdir``, and ``open()`` for writing) while a workload runs under one directory.
The real calls still happen (the workload sees a normal file system); each one that changes something
under the directory is also appended to a trace of ``Op`` with its bytes. Workloads add ``mark`` ops
("this append was acknowledged here") that have no effect on disk.

``PowerCut`` then answers, for a crash point ``k`` (ops ``[0, k)`` were issued, nothing after), which
on-disk states the kernel may leave. The persistence model is the conservative POSIX one:

* A file's data ops (writes, truncates) are durable once an ``fsync``/``fdatasync`` of that file
  follows them; any that are not may each be lost, and a write that reaches the disk may be torn at
  512-byte sector granularity (any subset of its sectors, the file size grown to its end or not, the
  missing bytes zero past the old end). Writes that persist apply in program order (the page cache
  holds the newest bytes), so "reordered" means any subset, not a shuffled replay.
* A directory entry change (create, mkdir, rename, unlink, rmdir) is durable once an fsync of that
  directory follows it; any that is not may or may not have happened, each independently. Fsyncing a
  file does not make its name durable, and a file whose name (or one of whose parent directories'
  names) did not survive is gone.

``PowerCut.states(k)`` enumerates the states a crash at ``k`` may leave: nothing unsynced survived,
everything did, every in-order prefix, every prefix ending in a torn write, everything but one op,
then seeded random subsets with random tears; identical images are returned once.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECTOR = 512
ROOT = 0

#: Ops that change a file's bytes; durable after an fsync of that file.
DATA = frozenset({"write", "truncate"})
#: Ops that change a directory's entries; durable after an fsync of that directory.
ENTRY = frozenset({"create", "mkdir", "rename", "unlink", "rmdir"})


@dataclass(slots=True)
class Op:
    """One recorded call. ``inode`` is the file (or directory) it is about; entry ops name ``parent``/``name``."""

    index: int
    kind: str
    inode: int = -1
    path: str = ""
    parent: int = -1
    name: str = ""
    parent2: int = -1
    name2: str = ""
    offset: int = 0
    data: bytes = b""
    size: int = 0
    mark: Any = None

    def show(self) -> str:
        if self.kind == "write":
            return f"write {self.path}#{self.inode} [{self.offset}, {self.offset + len(self.data)})"
        if self.kind == "truncate":
            return f"truncate {self.path}#{self.inode} to {self.size}"
        if self.kind == "rename":
            return f"rename {self.path} -> {self.name2} (#{self.inode}, dir #{self.parent})"
        if self.kind in ENTRY:
            return f"{self.kind} {self.path}#{self.inode} (dir #{self.parent})"
        if self.kind in ("fsync", "fdatasync", "fsyncdir"):
            return f"{self.kind} {self.path}#{self.inode}"
        return f"mark {self.mark!r}"


def scratch_dir() -> str | None:
    """A RAM-backed directory when there is one: crash states are written and fsynced thousands of times."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


class Recorder:
    """Records every change made under ``root`` while ``recording()`` is active (any thread)."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        if os.listdir(self.root):
            raise ValueError("recording starts on an empty directory")
        self.ops: list[Op] = []
        self._names: dict[str, int] = {"": ROOT}
        self._dirs: set[int] = {ROOT}
        self._fds: dict[int, tuple[int, bool, str]] = {}
        self._next_inode = 1
        self._lock = threading.RLock()
        self._real: dict[str, Any] = {}

    # -- the trace ----------------------------------------------------------------

    def _add(self, kind: str, **kw: Any) -> None:
        self.ops.append(Op(len(self.ops), kind, **kw))

    def mark(self, what: Any) -> None:
        """Note an event of the workload (an acknowledgement) at this point of the trace."""
        with self._lock:
            self._add("mark", mark=what)

    def _rel(self, path: Any) -> str | None:
        if isinstance(path, int):
            return None
        p = os.path.abspath(os.fsdecode(os.fspath(path)))
        if p == self.root:
            return ""
        if p.startswith(self.root + os.sep):
            return p[len(self.root) + 1:]
        return None

    @staticmethod
    def _split(rel: str) -> tuple[str, str]:
        head, _, tail = rel.rpartition("/")
        return head, tail

    def _new_inode(self) -> int:
        self._next_inode += 1
        return self._next_inode - 1

    # -- the patched calls ----------------------------------------------------------

    def _open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        real = self._real["open"]
        if dir_fd is not None:
            if dir_fd in self._fds:
                raise NotImplementedError("dir_fd under a recorded directory")
            return int(real(path, flags, mode, dir_fd=dir_fd))
        rel = self._rel(path)
        if rel is None:
            return int(real(path, flags, mode))
        with self._lock:
            inode = self._names.get(rel)
            fd = int(real(path, flags, mode))
            if inode is None:
                assert flags & os.O_CREAT, f"{rel} exists but was not made while recording"
                inode = self._new_inode()
                parent, name = self._split(rel)
                self._names[rel] = inode
                self._add("create", inode=inode, path=rel, parent=self._names[parent], name=name)
            elif flags & os.O_TRUNC and inode not in self._dirs:
                self._add("truncate", inode=inode, path=rel, size=0)
            self._fds[fd] = (inode, bool(flags & os.O_APPEND), rel)
            return fd

    def _close(self, fd: int) -> None:
        with self._lock:
            self._fds.pop(fd, None)
            self._real["close"](fd)

    def _wrote(self, fd: int, data: bytes, call: Any, offset: int | None = None) -> int:
        tracked = self._fds.get(fd)
        if tracked is None:
            return int(call())
        inode, append, rel = tracked
        with self._lock:
            if offset is None:
                offset = os.fstat(fd).st_size if append else os.lseek(fd, 0, os.SEEK_CUR)
            n = int(call())
            self._add("write", inode=inode, path=rel, offset=offset, data=bytes(data[:n]))
            return n

    def _write(self, fd: int, data: Any) -> int:
        return self._wrote(fd, bytes(data) if fd in self._fds else data, lambda: self._real["write"](fd, data))

    def _writev(self, fd: int, buffers: Any) -> int:
        buffers = list(buffers)
        joined = b"".join(bytes(b) for b in buffers) if fd in self._fds else b""
        return self._wrote(fd, joined, lambda: self._real["writev"](fd, buffers))

    def _pwrite(self, fd: int, data: Any, offset: int) -> int:
        return self._wrote(fd, bytes(data), lambda: self._real["pwrite"](fd, data, offset), offset)

    def _ftruncate(self, fd: int, size: int) -> None:
        with self._lock:
            self._real["ftruncate"](fd, size)
            tracked = self._fds.get(fd)
            if tracked is not None:
                self._add("truncate", inode=tracked[0], path=tracked[2], size=size)

    def _truncate(self, path: Any, size: int) -> None:
        if isinstance(path, int):
            self._ftruncate(path, size)
            return
        with self._lock:
            self._real["truncate"](path, size)
            rel = self._rel(path)
            if rel is not None:
                self._add("truncate", inode=self._names[rel], path=rel, size=size)

    def _sync(self, fd: int, kind: str) -> None:
        with self._lock:
            self._real[kind](fd)
            tracked = self._fds.get(fd)
            if tracked is not None:
                inode, _append, rel = tracked
                self._add("fsyncdir" if inode in self._dirs else kind, inode=inode, path=rel)

    def _fsync(self, fd: Any) -> None:
        self._sync(fd if isinstance(fd, int) else fd.fileno(), "fsync")

    def _fdatasync(self, fd: Any) -> None:
        self._sync(fd if isinstance(fd, int) else fd.fileno(), "fdatasync")

    def _rename(self, src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None,
                which: str = "rename") -> None:
        a, b = self._rel(src), self._rel(dst)
        if src_dir_fd is not None or dst_dir_fd is not None or (a is None and b is None):
            self._real[which](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            return
        assert a is not None and b is not None, "a rename into or out of the recorded directory"
        with self._lock:
            self._real[which](src, dst)
            inode = self._names.pop(a)
            for key in [k for k in self._names if k.startswith(a + "/")]:
                self._names[b + key[len(a):]] = self._names.pop(key)
            self._names[b] = inode
            (p1, n1), (p2, n2) = self._split(a), self._split(b)
            self._add("rename", inode=inode, path=a, parent=self._names[p1], name=n1,
                      parent2=self._names[p2], name2=n2)

    def _replace(self, src: Any, dst: Any, **kw: Any) -> None:
        self._rename(src, dst, which="replace", **kw)

    def _remove(self, path: Any, kind: str, dir_fd: int | None) -> None:
        real = self._real[kind]
        rel = None if dir_fd is not None else self._rel(path)
        if rel is None:
            if dir_fd is not None and dir_fd in self._fds:
                raise NotImplementedError("dir_fd under a recorded directory")
            real(path, dir_fd=dir_fd)
            return
        with self._lock:
            real(path)
            inode = self._names.pop(rel)
            parent, name = self._split(rel)
            self._add(kind, inode=inode, path=rel, parent=self._names[parent], name=name)

    def _unlink(self, path: Any, *, dir_fd: int | None = None) -> None:
        self._remove(path, "unlink", dir_fd)

    def _rmdir(self, path: Any, *, dir_fd: int | None = None) -> None:
        self._remove(path, "rmdir", dir_fd)

    def _mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        rel = None if dir_fd is not None else self._rel(path)
        if rel is None:
            self._real["mkdir"](path, mode, dir_fd=dir_fd)
            return
        with self._lock:
            self._real["mkdir"](path, mode)
            inode = self._new_inode()
            self._dirs.add(inode)
            self._names[rel] = inode
            parent, name = self._split(rel)
            self._add("mkdir", inode=inode, path=rel, parent=self._names[parent], name=name)

    def _builtin_open(self, file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        rel = self._rel(file) if isinstance(file, (str, bytes, os.PathLike)) else None
        if rel is None or not set(mode) & set("wax+"):
            return self._real["builtin_open"](file, mode, *args, **kw)
        assert "b" in mode, "only binary writes are recorded"
        flags = os.O_WRONLY | os.O_CREAT | {"w": os.O_TRUNC, "a": os.O_APPEND, "x": os.O_EXCL}.get(mode[0], 0)
        if "+" in mode:
            flags = (flags & ~os.O_WRONLY) | os.O_RDWR
        return io.BufferedWriter(_RecordedRaw(self, self._open(file, flags, 0o666)))

    # -- installing -------------------------------------------------------------------

    _OS = ("open", "close", "write", "writev", "pwrite", "ftruncate", "truncate", "fsync", "fdatasync", "rename",
           "replace", "unlink", "remove", "rmdir", "mkdir")

    @contextmanager
    def recording(self) -> Iterator[Recorder]:
        for name in self._OS:
            self._real[name] = getattr(os, name)
        self._real["builtin_open"] = builtins.open
        mine = {"open": self._open, "close": self._close, "write": self._write, "writev": self._writev,
                "pwrite": self._pwrite, "ftruncate": self._ftruncate, "truncate": self._truncate,
                "fsync": self._fsync, "fdatasync": self._fdatasync, "rename": self._rename,
                "replace": self._replace, "unlink": self._unlink, "remove": self._unlink, "rmdir": self._rmdir,
                "mkdir": self._mkdir}
        for name, fn in mine.items():
            setattr(os, name, fn)
        builtins.open = io.open = self._builtin_open  # type: ignore[assignment]
        try:
            yield self
        finally:
            for name in self._OS:
                setattr(os, name, self._real[name])
            builtins.open = io.open = self._real["builtin_open"]


class _RecordedRaw(io.RawIOBase):
    """What ``open(path, "wb")`` returns under the recorded directory: writes through the recorder."""

    def __init__(self, recorder: Recorder, fd: int) -> None:
        self._recorder = recorder
        self._fd = fd

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return self._recorder._write(self._fd, bytes(b))

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            self._recorder._close(self._fd)
        super().close()


# -- crash states ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tear:
    """How much of one write reached the disk: the sectors kept, and whether the file size grew to its end."""

    sectors: frozenset[int]
    grow: bool

    def show(self, op: Op) -> str:
        first = op.offset // SECTOR
        last = (op.offset + len(op.data) - 1) // SECTOR
        kept = sorted(s - first for s in self.sectors)
        return f"torn: sectors {kept} of {last - first + 1} kept, size {'grown' if self.grow else 'not grown'}"


@dataclass(frozen=True, slots=True)
class CrashState:
    """A crash after ops ``[0, crash_at)``: the unsynced ops that reached the disk, each maybe torn."""

    crash_at: int
    unsynced: tuple[int, ...]
    kept: tuple[tuple[int, Tear | None], ...]

    def describe(self, ops: list[Op]) -> str:
        kept = dict(self.kept)
        lines = [f"crash after op {self.crash_at - 1} (ops [0, {self.crash_at}) issued); unsynced ops:"]
        for i in self.unsynced:
            op = ops[i]
            if i not in kept:
                what = "DROPPED"
            else:
                tear = kept[i]
                what = "kept" if tear is None else tear.show(op)
            lines.append(f"  {i:5d} {op.show()}: {what}")
        if not self.unsynced:
            lines.append("  (none: everything issued was durable)")
        return "\n".join(lines)


@dataclass
class Image:
    """A directory tree as bytes: relative path -> file content, or None for a directory."""

    files: dict[str, bytes | None] = field(default_factory=dict)

    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for path in sorted(self.files):
            content = self.files[path]
            h.update(path.encode() + b"\0" + (b"D" if content is None else b"F%d\0" % len(content) + content))
        return h.hexdigest()

    def write(self, root: Path) -> None:
        for path in sorted(self.files):
            content = self.files[path]
            target = root / path
            if content is None:
                target.mkdir(exist_ok=True)
            else:
                target.write_bytes(content)


class PowerCut:
    """The crash states of one recorded trace."""

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops
        self._unsynced: list[tuple[int, ...]] = []
        data: dict[int, list[int]] = {}
        entries: dict[int, list[int]] = {}
        for op in ops:  # _unsynced[k]: the ops of [0, k) no barrier covers
            self._unsynced.append(tuple(sorted(i for lst in (*data.values(), *entries.values()) for i in lst)))
            if op.kind in DATA:
                data.setdefault(op.inode, []).append(op.index)
            elif op.kind in ENTRY:
                entries.setdefault(op.parent, []).append(op.index)
                if op.kind == "rename" and op.parent2 != op.parent:
                    entries.setdefault(op.parent2, []).append(op.index)
            elif op.kind in ("fsync", "fdatasync"):
                data.pop(op.inode, None)
            elif op.kind == "fsyncdir":
                pending = entries.pop(op.inode, [])
                for other in entries.values():  # a cross-directory rename needs both directories fsynced
                    other[:] = [i for i in other if i not in pending or ops[i].parent == ops[i].parent2]
        self._unsynced.append(tuple(sorted(i for lst in (*data.values(), *entries.values()) for i in lst)))

    def unsynced(self, k: int) -> tuple[int, ...]:
        return self._unsynced[k]

    def image(self, state: CrashState) -> Image:
        """The directory tree ``state`` leaves."""
        unsynced = set(state.unsynced)
        kept = dict(state.kept)
        entries: dict[tuple[int, str], int] = {}
        content: dict[int, bytearray] = {}
        dirs = {ROOT}
        for op in self.ops[: state.crash_at]:
            if op.kind == "mark" or op.kind in ("fsync", "fdatasync", "fsyncdir"):
                continue
            if op.index in unsynced and op.index not in kept:
                continue
            if op.kind == "create":
                entries[(op.parent, op.name)] = op.inode
                content.setdefault(op.inode, bytearray())
            elif op.kind == "mkdir":
                entries[(op.parent, op.name)] = op.inode
                dirs.add(op.inode)
            elif op.kind in ("unlink", "rmdir"):
                if entries.get((op.parent, op.name)) == op.inode:
                    del entries[(op.parent, op.name)]
            elif op.kind == "rename":
                if entries.get((op.parent, op.name)) == op.inode:
                    del entries[(op.parent, op.name)]
                entries[(op.parent2, op.name2)] = op.inode
            elif op.kind == "truncate":
                buf = content.setdefault(op.inode, bytearray())
                del buf[op.size:]
                buf.extend(bytes(op.size - len(buf)))
            elif op.kind == "write":
                _apply_write(content.setdefault(op.inode, bytearray()), op, kept.get(op.index))
        children: dict[int, list[tuple[str, int]]] = {}
        for (parent, name), inode in entries.items():
            children.setdefault(parent, []).append((name, inode))
        image = Image()
        stack = [("", ROOT)]
        while stack:
            prefix, d = stack.pop()
            for name, inode in children.get(d, []):
                path = f"{prefix}{name}"
                if inode in dirs:
                    image.files[path] = None
                    stack.append((path + "/", inode))
                else:
                    image.files[path] = bytes(content.get(inode, b""))
        return image

    def states(self, k: int, rng: random.Random, extra: int) -> Iterator[tuple[CrashState, Image]]:
        """The distinct states a crash at ``k`` may leave: the systematic ones, then ``extra`` random tries."""
        unsynced = self._unsynced[k]
        seen: set[str] = set()

        def make(kept: list[tuple[int, Tear | None]]) -> tuple[CrashState, Image] | None:
            state = CrashState(k, unsynced, tuple(kept))
            image = self.image(state)
            digest = image.digest()
            if digest in seen:
                return None
            seen.add(digest)
            return state, image

        candidates: list[list[tuple[int, Tear | None]]] = [[], [(i, None) for i in unsynced]]
        for j in range(1, len(unsynced)):
            candidates.append([(i, None) for i in unsynced[:j]])
        for j, i in enumerate(unsynced):
            op = self.ops[i]
            head: list[tuple[int, Tear | None]] = [(x, None) for x in unsynced[:j]]
            if op.kind == "write":
                for tear in _systematic_tears(op):
                    candidates.append([*head, (i, tear)])
            if len(unsynced) > 1:
                candidates.append([(x, None) for x in unsynced if x != i])
        for kept in candidates:
            got = make(kept)
            if got is not None:
                yield got
        for _ in range(extra if unsynced else 0):
            kept = []
            for i in unsynced:
                if rng.random() < 0.5:
                    continue
                op = self.ops[i]
                kept.append((i, _random_tear(op, rng) if op.kind == "write" and rng.random() < 0.5 else None))
            got = make(kept)
            if got is not None:
                yield got


def _sectors(op: Op) -> list[int]:
    if not op.data:
        return []
    return list(range(op.offset // SECTOR, (op.offset + len(op.data) - 1) // SECTOR + 1))


def _systematic_tears(op: Op) -> list[Tear]:
    """The first sector only, all but the last, all but the first; each with the size grown and not."""
    sectors = _sectors(op)
    picks = [frozenset(sectors[:1]), frozenset(sectors[:-1]), frozenset(sectors[1:]), frozenset()]
    return [Tear(s, grow) for s in dict.fromkeys(picks) for grow in (False, True)
            if len(s) < len(sectors) or not grow]


def _random_tear(op: Op, rng: random.Random) -> Tear:
    sectors = _sectors(op)
    return Tear(frozenset(s for s in sectors if rng.random() < 0.5), rng.random() < 0.5)


def _apply_write(buf: bytearray, op: Op, tear: Tear | None) -> None:
    start, end = op.offset, op.offset + len(op.data)
    if tear is None:
        pieces = [(start, end)]
        new_end = end
    else:
        pieces = [(max(start, s * SECTOR), min(end, (s + 1) * SECTOR)) for s in sorted(tear.sectors)]
        new_end = end if tear.grow else max((b for _a, b in pieces), default=0)
    if new_end > len(buf):
        buf.extend(bytes(new_end - len(buf)))
    for a, b in pieces:
        if b > len(buf):
            buf.extend(bytes(b - len(buf)))
        buf[a:b] = op.data[a - start: b - start]


def show_trace(ops: list[Op], upto: int, around: int | None = None) -> str:
    """The trace up to ``upto`` (all of it, or ``around`` ops either side of the end), one op a line."""
    first = 0 if around is None else max(0, upto - around)
    lines = [f"{op.index:5d} {op.show()}" for op in ops[first:upto]]
    if first:
        lines.insert(0, f"  ... {first} earlier ops")
    return "\n".join(lines)
