"""What the command prints: the result on stdout; messages, progress and errors on stderr."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional, TextIO

PROGRESS_DELAY = 1.0  # seconds a step runs before its progress line appears
PROGRESS_INTERVAL = 0.25
BAR_WIDTH = 20
CLEAR_LINE = "\r\x1b[K"


class Console:
    """``quiet`` keeps stderr to errors; progress shows only when stderr is a terminal."""

    def __init__(self, quiet: bool = False, stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> None:
        self.quiet = quiet
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.shows_progress = not quiet and self.stderr.isatty()

    def result(self, text: str) -> None:
        self.stdout.write(text if text.endswith("\n") else text + "\n")
        self.stdout.flush()

    def message(self, text: str) -> None:
        """A line on stderr, even when quiet: part of the result that is not the report."""
        print(text, file=self.stderr)

    def info(self, text: str) -> None:
        if not self.quiet:
            self.message(text)

    def warning(self, text: str) -> None:
        """A warning about the result, even when quiet."""
        self.message(f"octify: warning: {text}")

    def error(self, text: str) -> None:
        self.message(f"octify: error: {text}")

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Show ``label`` with the elapsed time while the block runs, once it has run for a second."""
        if not self.shows_progress:
            yield
            return
        start, done, shown = time.monotonic(), threading.Event(), threading.Event()

        def tick() -> None:
            delay, line = PROGRESS_DELAY, ""
            while not done.wait(delay):
                shown.set()
                delay, previous = PROGRESS_INTERVAL, line
                line = f"{label}... {time.monotonic() - start:.0f} s"
                if line != previous:
                    self.stderr.write(CLEAR_LINE + line)
                    self.stderr.flush()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        finished = False
        try:
            yield
            finished = True
        finally:
            done.set()
            ticker.join()
            if shown.is_set():
                ending = f"{label}: done in {time.monotonic() - start:.1f} s\n" if finished else ""
                self.stderr.write(CLEAR_LINE + ending)
                self.stderr.flush()

    def progress(self, what: str, done: int, total: int) -> None:
        """A progress bar for work counted in steps (``done`` of ``total``), cleared when complete."""
        if not self.shows_progress:
            return
        filled = BAR_WIDTH * done // max(total, 1)
        self.stderr.write(f"{CLEAR_LINE}{what} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}")
        if done >= total:
            self.stderr.write(CLEAR_LINE)
        self.stderr.flush()
