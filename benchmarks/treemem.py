"""Peak memory of a process tree over time, for the benchmarks that compare whole commands.

RSS counts a shared library once per process (every worker that imports torch "holds" it again); PSS splits
shared pages between the processes mapping them, so the sum of PSS is what the tree holds. PSS reads
/proc/PID/smaps, which is slower, so it can be sampled less often than RSS.
"""

from __future__ import annotations

import os
import threading


class TreeSampler(threading.Thread):
    """Sample a process and its descendants until `stop()`: peak summed RSS and PSS, most processes seen.

    `pss_every`: read PSS on every n-th sample (0: never); `include_root`: count the root process itself
    (leave it out when the root is only a wrapper such as /usr/bin/time)."""

    def __init__(self, pid: int | None = None, interval: float = 0.2, pss_every: int = 1, include_root: bool = True):
        super().__init__(daemon=True)
        self.pid = os.getpid() if pid is None else pid
        self.interval, self.pss_every, self.include_root = interval, pss_every, include_root
        self.peak_rss = self.peak_pss = 0
        self.max_procs = 0
        self.samples = 0
        #: each process's own peak RSS and command line, by pid (a cluster's workers one by one)
        self.peak_by_pid: dict[int, int] = {}
        self.cmdline: dict[int, str] = {}
        self._done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._done.is_set():
            try:
                procs = ([root] if self.include_root else []) + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            with_pss = self.pss_every > 0 and self.samples % self.pss_every == 0
            rss = pss = 0
            for p in procs:
                try:
                    info = p.memory_full_info() if with_pss else p.memory_info()
                    rss += info.rss
                    pss += info.pss if with_pss else 0
                    if info.rss > self.peak_by_pid.get(p.pid, 0):
                        self.peak_by_pid[p.pid] = info.rss
                    if p.pid not in self.cmdline:
                        self.cmdline[p.pid] = " ".join(p.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            if with_pss:
                self.peak_pss = max(self.peak_pss, pss)
            self.max_procs = max(self.max_procs, len(procs))
            self.samples += 1
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()
