"""MetaCLIP-style balancing (Xu et al., "Demystifying CLIP Data", 2023).

Each caption is matched against a list of metadata entries by substring (lowercase caption, lowercase
entry). The runner counts, once over the whole pool, how many captions match each entry. A caption with no
match is dropped. A caption is kept when at least one of its matched entries draws it: entry e draws a
caption with probability min(1, t / count(e)), so an entry with at most t matches keeps all of them and a
larger one keeps about t (MetaCLIP's curation: `random() < t / entry_count[e]` for any matched e). The draw
is a hash of (uid, entry, seed): deterministic, and the same however the pool is partitioned.

Entries: a small built-in list of everyday visual concepts, and/or a user file (one entry a line, # for
comments). MetaCLIP's own list has 500,000 entries (WordNet synsets, Wikipedia uni/bigrams and titles);
matching here costs one substring pass per entry, so lists of that size want an Aho-Corasick matcher.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.base import Filter, FilterConfigError, FilterResult, FileRequest, GatherRequest
from filters.rules import missing_text, to_numpy_bool, uid_hash, uniform_from_hash

BUILTIN_ENTRIES = tuple("""
airplane apple backpack bag ball banana bear bed bench bicycle bird boat book bottle bowl boy bread bridge
building bus butterfly cake camera car castle cat chair child church city clock cloud coffee computer cow cup
dog door dress duck elephant engine eye face farm field fish flag flower food forest fork fountain fox fruit
garden girl glass guitar hair hand hat helicopter hill horse house ice island jacket kitchen knife lake lamp
leaf lighthouse lion man map market moon motorcycle mountain mouse mushroom ocean orange owl painting palm
park pen people phone piano pizza plane plate pool rabbit rain river road rock rose sand sandwich sea sheep
shirt shoe sign sky snow sofa spoon stadium star station statue street sun sunset table tea temple tiger
tower toy tractor train tree truck umbrella vase village wall watch water waterfall wave whale window wine
woman wood zebra
""".split())


class EntryMatches:
    """Which entries each caption contains, as one boolean array per entry."""

    def __init__(self, entries: tuple[str, ...]):
        self.entries = entries

    def matrix(self, text) -> list[np.ndarray]:
        lower = pc.utf8_lower(pc.fill_null(text, ""))
        return [to_numpy_bool(pc.match_substring(lower, e)) for e in self.entries]


class EntryCounts(EntryMatches):
    """Gather step: captions matching each entry over the whole pool."""

    columns = ("text",)

    def map(self, table: pa.Table) -> np.ndarray:
        return np.array([m.sum() for m in self.matrix(table.column("text"))], dtype=np.int64)

    def reduce(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.sum(parts, axis=0) if parts else np.zeros(len(self.entries), np.int64)


class MetaClipBalance(Filter):
    name = "metaclip_balance"
    description = ("MetaCLIP balancing: captions matched to metadata entries by substring; entries with more than t "
                   "matches over the pool are sampled down to about t (deterministic by seed and uid); unmatched "
                   "captions dropped. Built-in entry list and/or entries_file.")
    columns = ("text",)
    path_params = ("entries_file",)

    def __init__(self, t: int = 20000, entries_file: str | None = None, builtin: bool = True, seed: int = 0):
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise FilterConfigError(f"t must be a positive integer, got {t!r}")
        if not builtin and not entries_file:
            raise FilterConfigError("metaclip_balance needs entries: builtin: true and/or entries_file: FILE")
        self.t, self.entries_file, self.builtin, self.seed = t, entries_file, bool(builtin), int(seed)
        self._entries: tuple[str, ...] | None = None if entries_file else self._merge([])
        self._counts: np.ndarray | None = None

    def _merge(self, lines: list[str]) -> tuple[str, ...]:
        entries = list(BUILTIN_ENTRIES) if self.builtin else []
        entries += [x.strip().lower() for x in lines if x.strip() and not x.strip().startswith("#")]
        return tuple(dict.fromkeys(entries))

    def _counts_request(self) -> GatherRequest:
        digest = zlib.crc32("\n".join(self._entries).encode())
        return GatherRequest(f"metaclip_counts:{len(self._entries)}:{digest:08x}", EntryCounts(self._entries))

    def params(self) -> dict:
        out = {"t": self.t, "entries_file": self.entries_file, "builtin": self.builtin, "seed": self.seed}
        if self._entries is not None:
            out["entries"] = len(self._entries)
        if self._counts is not None:
            out["entries_matched"] = int((self._counts > 0).sum())
            out["entries_over_t"] = int((self._counts > self.t).sum())
        return out

    def label(self) -> str:
        return f"metaclip_balance[t={self.t}]"

    def requests(self) -> list:
        if self._entries is None:
            return [FileRequest(self.entries_file, "lines")]
        return [self._counts_request()] if self._counts is None else []

    def bind(self, resolved: dict) -> "MetaClipBalance":
        if self._counts is not None:
            return self
        new = MetaClipBalance(self.t, self.entries_file, self.builtin, self.seed)
        new._entries = self._entries
        if new._entries is None:
            req = FileRequest(self.entries_file, "lines")
            if req not in resolved:
                return new
            new._entries = self._merge(list(resolved[req]))
            if not new._entries:
                raise FilterConfigError(f"{self.entries_file}: no entries")
        req = new._counts_request()
        if req in resolved:
            new._counts = np.asarray(resolved[req], dtype=np.int64)
        return new

    def apply(self, table: pa.Table) -> FilterResult:
        if self._counts is None:
            raise FilterConfigError("metaclip_balance must be bound to its pool-wide entry counts first")
        text = table.column("text")
        n = table.num_rows
        matched = np.zeros(n, dtype=bool)
        drawn = np.zeros(n, dtype=bool)
        uids = table.column("uid")
        for e, m in enumerate(EntryMatches(self._entries).matrix(text)):
            if not m.any():
                continue
            matched |= m
            count = int(self._counts[e])
            if count <= self.t:
                drawn |= m
                continue
            rows = np.flatnonzero(m & ~drawn)
            if len(rows):
                u = uniform_from_hash(uid_hash(uids.take(pa.array(rows)), self.seed * 1_000_003 + e + 1))
                drawn[rows[u < self.t / count]] = True
        rules = {"missing_caption": missing_text(text), "no_entry_match": ~matched, "balanced_out": matched & ~drawn}
        return FilterResult.from_rules(n, rules)
