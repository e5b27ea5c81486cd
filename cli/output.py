"""All-or-nothing output directories.

Everything is written into a hidden staging directory next to the target
(``.NAME.XXXXXXXX.partial``), which is renamed to the target once complete: a failed or
interrupted run removes it, so the target is either absent, untouched, or complete.
Replacing (``--force``) renames the old directory aside, renames the new one in, then
deletes the old one; if the second rename fails the old one is put back.
"""
from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

from .errors import CommandError, UsageError

MARKER = "report.json"  # what makes a directory an octify output that --force may replace


def check_target(target: Path, replace: bool) -> None:
    """UsageError unless ``target`` can be created, or replaced when ``replace``."""
    if not (target.exists() or target.is_symlink()):
        if not target.parent.is_dir():
            problem = "is not a directory" if target.parent.exists() else "does not exist"
            raise UsageError(f"cannot write {target}: {target.parent} {problem}")
        return
    if target.is_symlink() or not target.is_dir():
        kind = "a symbolic link" if target.is_symlink() else "a file"
        raise UsageError(f"{target} is {kind}, not an octify output directory; octify never replaces it, "
                         "even with --force: choose another -o")
    if any(target.iterdir()) and not (target / MARKER).is_file():
        raise UsageError(f"{target} exists and is not an octify output directory (no {MARKER}); octify never "
                         "replaces it, even with --force: choose another -o")
    if not replace:
        raise UsageError(f"{target} already exists; pass --force to replace it")


def leftovers(target: Path) -> List[Path]:
    """Staging and set-aside directories of ``target`` left by runs that were killed (or are still running)."""
    parent, name = Path(os.path.abspath(target)).parent, Path(os.path.abspath(target)).name
    return sorted(p for suffix in ("partial", "old") for p in parent.glob(f".{glob.escape(name)}.*.{suffix}")
                  if re.fullmatch(rf"\.{re.escape(name)}\.[0-9a-f]{{8}}\.{suffix}", p.name) and p.is_dir())


@contextmanager
def staged_directory(target: Path, replace: bool = False) -> Iterator[Path]:
    """A new empty directory to fill; moved to ``target`` when the block ends without an exception."""
    check_target(target, replace)
    target = Path(os.path.abspath(target))  # a name to put the staging directory beside, even for "."
    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:
        staging.mkdir()  # unlike tempfile.mkdtemp, honours the umask: the output gets the usual permissions
    except OSError as error:
        raise UsageError(f"cannot write to {target.parent}: {error.strerror or error}") from error
    try:
        yield staging
        _move_into_place(staging, target, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, target: Path, replace: bool) -> None:
    check_target(target, replace)  # again: something may have appeared meanwhile
    try:
        if not target.exists():
            os.rename(staging, target)
            return
        old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        raise CommandError(f"cannot move the output into {target}: {error.strerror or error}") from error
