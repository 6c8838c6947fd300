"""The `curate run` driver's running totals of partition results (`curate.run.filter_partition`'s dicts).

Each result is folded in as its task finishes (`Engine.imap_unordered`), in whatever order the engine hands them
back, and then dropped: the driver holds the totals, not every partition's result, so its memory does not grow
with the number of files (~40 KiB a result: 1.3 GB at DataComp xlarge's ~32,000 files). What the output needs
per file (each partition's spilled run: a path and a row count) is kept by partition index.

Every fold gives the bytes the merge of all results in partition order gave, whatever the arrival order: sums;
a min or max from the lowest partition among equal values (as min() over partition order picks); a rule's place
in a step's counts by (first partition that has it, its place there); the examples and the score sample by
(uid hash, partition, row), so rows of one uid in two files tie as a stable sort over partition order breaks it.
The examples keep only the best few a step and kind; the sample at most twice its size before it is cut back.
"""

from __future__ import annotations

import numpy as np

_STEP_RULES = ("rejected_by_first_rule", "failed_rule")
MAX_PIECES = 512  # partitions' samples buffered before a cut


def _merge_parts(into: list[dict], parts: list[dict]) -> list[dict]:
    """Add an and/or/not step's part counts (the same parts, in the same order, in every partition)."""
    if not into:
        return [{**{k: v for k, v in p.items() if k != "parts"}, **({"parts": _merge_parts([], p["parts"])} if "parts" in p else {})} for p in parts]
    for m, p in zip(into, parts):
        m["rows_in"] += p["rows_in"]
        m["kept"] += p["kept"]
        if "parts" in p:
            m["parts"] = _merge_parts(m.get("parts", []), p["parts"])
    return into


class _Extreme:
    """The min (or max) of values from partitions, as min() over them in partition order picks among equals."""

    def __init__(self, sign: int):
        self.sign, self.value, self.index = sign, None, -1

    def add(self, value, index: int) -> None:
        if value is None:
            return
        if self.value is None or self.sign * value < self.sign * self.value or (value == self.value and index < self.index):
            self.value, self.index = value, index


class _Smallest:
    """The `k` rows of smallest (hash, partition, row) among those added, with their payloads: the first `k`
    of a stable sort by hash over the rows of all partitions in partition order. Rows wait in a buffer and are
    cut back to `k` whenever it passes 2k, so a cut costs one sort per k rows added."""

    def __init__(self, k: int):
        self.k = k
        self.keys: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.payloads: list[np.ndarray] = []
        self.buffered = 0

    def add(self, hashes: np.ndarray, index: int, payload: np.ndarray) -> None:
        n = len(hashes)
        if not n:
            return
        self.keys.append((np.asarray(hashes, dtype=np.uint64), np.full(n, index, np.int64), np.arange(n)))
        self.payloads.append(payload)
        self.buffered += n
        if self.buffered > 2 * self.k or len(self.keys) > MAX_PIECES:
            self._cut()

    def _cut(self) -> None:
        h, part, row = (np.concatenate(c) for c in zip(*self.keys))
        payload = np.concatenate(self.payloads)
        order = np.lexsort((row, part, h))[: self.k]
        self.keys, self.payloads, self.buffered = [(h[order], part[order], row[order])], [payload[order]], len(order)

    def result(self, dtype) -> np.ndarray:
        if not self.keys:
            return np.zeros(0, dtype)
        self._cut()
        return self.payloads[0]


class _Counts:
    """One step's merged counts; its rule dicts ordered as rules first appear in partition order."""

    def __init__(self, step: dict):
        self.step = {"filter": step["filter"], "rows_in": 0, "kept": 0, "rejected": 0, "rejected_by_first_rule": {}, "failed_rule": {}}
        if "label" in step:
            self.step["label"] = step["label"]
        self.first_seen: dict[str, dict[str, tuple[int, int]]] = {key: {} for key in _STEP_RULES}

    def add(self, step: dict, index: int) -> None:
        m = self.step
        for k in ("rows_in", "kept", "rejected"):
            m[k] += step[k]
        for key in _STEP_RULES:
            seen = self.first_seen[key]
            for place, (rule, count) in enumerate(step[key].items()):
                m[key][rule] = m[key].get(rule, 0) + count
                seen[rule] = min(seen.get(rule, (index, place)), (index, place))
        if "parts" in step:
            m["parts"] = _merge_parts(m.get("parts", []), step["parts"])

    def result(self) -> dict:
        out = dict(self.step)
        for key in _STEP_RULES:
            seen = self.first_seen[key]
            out[key] = {rule: out[key][rule] for rule in sorted(out[key], key=seen.__getitem__)}
        return out


class RunTotals:
    """Running totals of `filter_partition` results: `add(index, result)` for each partition, in any order."""

    def __init__(self, partitions: int, sample: int, examples: int):
        self.sample, self.examples = sample, examples
        self.runs: list = [None] * partitions  # each partition's spilled run ({"path", "rows"}), by index
        self.rows = 0
        self.repeated_uid_rows = 0
        self._steps: list[_Counts] = []
        self._scores: dict[str, dict] = {}
        self._chosen: list[dict[str, list]] = []  # per step and kind: [(hash, partition, row, example)]

    def add(self, index: int, result: dict) -> None:
        """Fold in partition `index`'s result; nothing of it is held but its run and what the totals keep."""
        self.runs[index] = result["run"]
        self.rows += result["rows"]
        self.repeated_uid_rows += result["repeated_uid_rows"]
        for i, step in enumerate(result["steps"]):
            if i == len(self._steps):
                self._steps.append(_Counts(step))
            self._steps[i].add(step, index)
        for column, s in result["scores"].items():
            t = self._scores.get(column)
            if t is None:
                t = self._scores[column] = {"rows": 0, "missing": 0, "min": _Extreme(1), "max": _Extreme(-1),
                                            "sample": _Smallest(self.sample)}
            t["rows"] += s["rows"]
            t["missing"] += s["missing"]
            t["min"].add(s["min"], index)
            t["max"].add(s["max"], index)
            if self.sample:
                t["sample"].add(s["sample_hash"], index, s["sample"])
        for i, ex in enumerate(result.get("examples", [])):
            if i == len(self._chosen):
                self._chosen.append({"kept": [], "rejected": []})
            for kind in ("kept", "rejected"):
                best = self._chosen[i][kind] + [(e["hash"], index, row, e) for row, e in enumerate(ex[kind])]
                self._chosen[i][kind] = sorted(best, key=lambda c: c[:3])[: self.examples]

    def steps(self) -> list[dict]:
        """Each step's counts summed over the partitions."""
        return [c.result() for c in self._steps]

    def scores(self) -> dict:
        """Per score column: rows, missing, min, max and (with a sample size) the sample of smallest uid hash."""
        out = {}
        for column, t in self._scores.items():
            entry = {"rows": t["rows"], "missing": t["missing"], "min": t["min"].value, "max": t["max"].value}
            if self.sample:
                entry["sample"] = t["sample"].result(np.float64)
            out[column] = entry
        return out

    def chosen_examples(self) -> list[dict]:
        """Per step, the kept and rejected examples of smallest uid hash."""
        return [{kind: [c[3] for c in st[kind]] for kind in ("kept", "rejected")} for st in self._chosen]
