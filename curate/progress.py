"""Progress of long commands on stderr: a tqdm bar in a terminal, a plain line now and then in a log, or nothing.

stdout carries commands' results (summaries a script may read), so progress only ever writes to stderr. What
it writes depends on where stderr goes, decided here once for every command and engine:

* a terminal: a tqdm bar, redrawn in place (tasks done, rate, and what the tasks' results add up to);
* anything else (a pipe, a log file): one plain line every `INTERVAL` seconds at most, and one when the
  work ends, so a captured log shows progress without being flooded;
* `--no-progress` (`configure(False)`): nothing.

Engines report per task, as tasks finish (a shard's result comes back whole), so a map's bar counts tasks;
a `Meter` says what each task's result adds (images, successes) and how to show the totals.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

INTERVAL = 10.0  # seconds between plain lines when stderr is not a terminal

_enabled = True


def configure(enabled: bool) -> None:
    """Turn progress on or off for this process (`--no-progress`); commands set it on every run."""
    global _enabled
    _enabled = bool(enabled)


def mode(stream: TextIO | None = None) -> str:
    """'off', 'bar' (stderr is a terminal) or 'lines' (it is not)."""
    if not _enabled:
        return "off"
    stream = stream if stream is not None else sys.stderr
    if stream is None:  # no stderr at all: never fall back to print()'s stdout
        return "off"
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "lines"


@dataclass(frozen=True)
class Meter:
    """What a bar shows for a map of tasks: its label, what one task is, what each task's result adds to the
    counters (`count(result) -> {"images": 812}`), and how the counters read (`show(counters, seconds)`)."""

    desc: str
    unit: str = "tasks"
    count: Callable[[Any], dict] | None = None
    show: Callable[[dict, float], str] | None = None


def rate(n: float, seconds: float, unit: str) -> str:
    """`n` per second, readable: 81.2 images/s."""
    return f"{n / seconds:,.1f} {unit}/s" if seconds > 0 else f"- {unit}/s"


class Progress:
    """One bar (or its plain lines) for `total` units of work; `update(n, **counters)` as work completes."""

    def __init__(self, desc: str | Meter | None, total: int | None = None, unit: str = "tasks",
                 stream: TextIO | None = None, interval: float = INTERVAL):
        meter = desc if isinstance(desc, Meter) else Meter(desc, unit) if desc else None
        self.meter = meter
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.mode = "off" if meter is None else mode(self.stream)
        self.interval = interval
        self.done = 0
        self.counters: dict[str, int] = {}
        self.start = self._last = time.monotonic()
        self._bar = None
        self._drawn = False
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=meter.desc, unit=meter.unit, file=self.stream, leave=False,
                             dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int = 1, **counters: int) -> None:
        if self.mode == "off":
            return
        self.done += n
        for k, v in counters.items():
            self.counters[k] = self.counters.get(k, 0) + int(v or 0)
        if self._bar is not None:
            shown = self.shown(time.monotonic() - self.start)
            if shown:
                self._bar.set_postfix_str(shown, refresh=False)
            self._drawn = bool(self._bar.update(n))  # tqdm redraws at most every mininterval
        elif time.monotonic() - self._last >= self.interval:
            self._line()

    def task_done(self, result: Any, tasks: int = 1) -> None:
        """A task of a map finished with `result`: count it (`tasks=0` if it was counted as it finished, before
        its result came back), and add what its result counts."""
        if self.mode == "off":
            return
        count = self.meter.count if self.meter is not None else None
        self.update(tasks, **(count(result) if count is not None else {}))
        if self._bar is not None and not self._drawn:
            self._bar.refresh()  # tasks are few and long (a shard each): show each one's counts at once

    def shown(self, seconds: float) -> str:
        """The counters as the meter reads them (default: each counter, the first with its rate)."""
        if self.meter is not None and self.meter.show is not None:
            return self.meter.show(self.counters, seconds)
        parts = [f"{v:,} {k}" for k, v in self.counters.items()]
        if parts:
            k, v = next(iter(self.counters.items()))
            parts.append(rate(v, seconds, k))
        return ", ".join(parts)

    def _line(self) -> None:
        now = time.monotonic()
        self._last = now
        seconds = now - self.start
        of = f"/{self.total}" if self.total is not None else ""
        parts = [f"{self.done:,}{of} {self.meter.unit}", rate(self.done, seconds, self.meter.unit),
                 self.shown(seconds), f"{seconds:.0f} s"]
        print(f"{self.meter.desc}: {', '.join(p for p in parts if p)}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """One line about this work (not a count), above the bar or among the plain lines; nothing when off."""
        if self.mode == "bar" and self._bar is not None:
            self._bar.write(text, file=self.stream)
        elif self.mode == "lines":
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Remove the bar, or write the last plain line (once)."""
        if self.mode == "bar" and self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and (self.done or self.total):
            self._line()
        self.mode = "off"

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self.mode == "lines":
            self.mode = "off"  # the work failed: its error is the last word, not a count line before it
        self.close()


@contextlib.contextmanager
def working(desc: str, stream: TextIO | None = None, interval: float = INTERVAL) -> Iterator[None]:
    """For work that counts nothing as it goes (an in-memory pair search, a dataframe job): the time it has
    taken so far, redrawn every second in a terminal, a line every `interval` seconds otherwise; no last line
    (the command's summary follows)."""
    stream = stream if stream is not None else sys.stderr
    how = mode(stream)
    if how == "off":
        yield
        return
    start = time.monotonic()
    bar = None
    if how == "bar":
        from tqdm import tqdm

        bar = tqdm(desc=desc, file=stream, leave=False, bar_format="{desc}: working, {elapsed}")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(1.0 if bar is not None else interval):
            if bar is not None:
                bar.refresh()
            else:
                print(f"{desc}: working, {time.monotonic() - start:.0f} s", file=stream, flush=True)

    thread = threading.Thread(target=beat, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if bar is not None:
            bar.close()


__all__ = ["INTERVAL", "Meter", "Progress", "configure", "mode", "rate", "working"]
