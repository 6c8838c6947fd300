"""The loader side of a GPU pass: a DataLoader dataset that hands whole shards to worker processes.

Each worker takes the next shard from a shared counter when it finishes one (shards differ in size
and in how many bad images they hold, so a fixed split would leave workers idle at the end), and
yields that shard's `ShardBatch`es: read, decoded once, hashed, preprocessed and tokenised.
"""

from __future__ import annotations

from torch.utils.data import IterableDataset

from curate.signals.shardpass import PrepareJob, prepare_shard


class ShardStream(IterableDataset):
    def __init__(self, jobs: list[PrepareJob], counter):
        self.jobs = jobs
        self.counter = counter  # a multiprocessing Value: the index of the next job to hand out

    def __iter__(self):
        while True:
            with self.counter.get_lock():
                i = self.counter.value
                self.counter.value += 1
            if i >= len(self.jobs):
                return
            yield from prepare_shard(self.jobs[i])


def identity(x):
    return x
