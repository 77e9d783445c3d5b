"""Write files and directories so that nothing partial is ever left behind.

Outputs are written to a temporary sibling first and moved into place with one
rename; an existing output is only replaced when ``overwrite=True``. A
multi-file output (a directory of PEFT adapters, a figure directory) is one
temporary directory renamed once: a reader sees either no output or all of it.

Temporary siblings are named ``.<name>.tmp-<pid>-<random>`` (and, while an
output is being replaced, ``.<name>.old-<pid>``). A process killed mid-write
(SIGKILL, power loss) leaves its sibling behind; the next write of the same
output removes every such sibling whose process is no longer running
(:func:`clean_stale`). Siblings of live processes are left alone, so two
processes may write different outputs of one directory at once.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import OutputExistsError

__all__ = ["atomic_dir", "atomic_entries", "atomic_file", "check_writable", "clean_stale"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Return ``path`` as a Path; refuse if it exists and ``overwrite`` is false."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass overwrite=True (or --overwrite) to replace it")
    return path


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-{os.getpid()}-"


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (on this machine); our own pid counts as alive."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process, or not a pid at all
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def clean_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``path`` (``.<name>.tmp-<pid>-*``, ``.<name>.old-<pid>``) that processes no
    longer running left behind (killed mid-write); return them. Siblings of running processes are kept."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:tmp-(\d+)-.*|old-(\d+))", re.DOTALL)
    removed = []
    with os.scandir(path.parent) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match and not _alive(int(match[1] or match[2])):
                _remove(path.parent / entry.name)
                removed.append(path.parent / entry.name)
    return removed


@functools.lru_cache(maxsize=1)
def _renameat2():
    """libc's ``renameat2`` (glibc >= 2.28), or None."""
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is unavailable."""
    import ctypes

    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _move_into_place(tmp: Path, path: Path) -> None:
    """Make ``tmp`` become ``path``: one rename, or (``path`` exists) one exchange and the old tree removed."""
    if not (path.exists() or path.is_symlink()):
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):  # tmp now holds the old output
        _remove(tmp)
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    _remove(old)
    os.replace(path, old)  # a kill between these two renames leaves no output; the next write removes `old`
    os.replace(tmp, path)
    _remove(old)


def _make_tmp_dir(path: Path) -> Path:
    clean_stale(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output should not be
    return tmp


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds.

    On an exception the temporary directory is removed and ``path`` (if it
    existed) is left untouched.
    """
    path = check_writable(path, overwrite)
    tmp = _make_tmp_dir(path)
    try:
        yield tmp
        _move_into_place(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def atomic_entries(directory: str | os.PathLike, names: Iterable[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory in which to write the entries ``names`` of ``directory``; when the block
    succeeds they all appear in ``directory`` at once.

    A new ``directory`` is the temporary one, renamed once. An existing one keeps its other entries (they are
    hard-linked, or copied, into the temporary tree, which then takes its place in one exchange). Every
    ``directory/<name>`` is checked before anything is written: it is refused if it exists and ``overwrite``
    is false. Temporary siblings that killed writes of these entries left inside ``directory`` are dropped.
    On an exception nothing changes.
    """
    directory = Path(directory)
    names = list(names)
    for name in names:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"{directory}: {name!r} cannot be a directory entry")
    if directory.exists() and not directory.is_dir():
        raise OutputExistsError(f"{directory}: exists and is not a directory")
    for name in names:
        check_writable(directory / name, overwrite)
    tmp = _make_tmp_dir(directory)
    try:
        if directory.is_dir():
            replaced = set(names)
            leftovers = re.compile(r"\.(.+)\.(?:tmp|old)-.*", re.DOTALL)
            for entry in os.scandir(directory):
                match = leftovers.fullmatch(entry.name)
                if entry.name in replaced or (match and match[1] in replaced):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.copytree(entry.path, tmp / entry.name, symlinks=True, copy_function=_link_or_copy)
                elif entry.is_symlink():
                    os.symlink(os.readlink(entry.path), tmp / entry.name)
                else:
                    _link_or_copy(entry.path, str(tmp / entry.name))
            shutil.copymode(directory, tmp)
        yield tmp
        _move_into_place(tmp, directory)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path that replaces ``path`` when the block succeeds."""
    path = check_writable(path, overwrite)
    clean_stale(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; the output should not be
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
