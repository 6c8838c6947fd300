"""Every pair of 64-bit hashes within Hamming distance D, exactly, without comparing all pairs.

Method: multi-index hashing with the generalised pigeonhole principle (Norouzi et al. 2012; Qin et al.
2018). The 64 bits are cut into m contiguous blocks; block i gets a radius t_i with
sum(t_i + 1) >= D + 1. If two hashes differ in at most D bits, some block i differs in at most t_i bits
(otherwise the total would be at least sum(t_i + 1) > D). So the pairs within D are exactly the verified
pairs among the candidates "block i within t_i" over all blocks: no pair is missed, and verification
(popcount of the XOR) removes every false candidate. With t_i = 0 everywhere and m = D + 1 this is the
plain D+1-block pigeonhole; that is fine for small D but at D = 8 its 7-bit blocks put ~N/128 hashes in
each bucket (quadratic). Letting blocks stay ~21 bits wide and searching a small radius inside each
keeps buckets near one hash each: at 1M hashes and D = 8 the plan is 3 blocks with radius 2.

How one block is searched (all of it vectorised numpy):

- The distinct hashes are sorted by the block's value, so a bucket (all hashes with one block value k)
  is a contiguous range start[k] .. start[k] + count[k] of the sorted array; start and count are
  direct-addressed (blocks are at most 22 bits wide).
- A pair (x, y) has block distance <= t exactly when key(y) = key(x) ^ m for a flip mask m with at most
  t bits set. m = 0: both in one bucket; every pair inside each bucket is listed (by rank offset).
  m != 0: let h be m's highest bit; exactly one of the two keys has bit h clear, call that hash x ("low
  side"), and y lies in bucket key(x) ^ m. Each such pair is enumerated exactly once, in one of two
  disjoint passes, with S = the table's slots per bucket (1 while buckets hold ~1 hash, as at 1M
  hashes; 4-8 at 10M): (a) y is among the first S members of its bucket: every low-side x probes
  bucket key(x) ^ m and is compared with the bucket's first S members, read as one row of a
  direct-addressed table (one gather per probe, in key order, so the table is read as a few sequential
  streams); (b) y is a later member (rank >= S, only in buckets holding more than S hashes): y probes
  bucket key(y) ^ m and is compared with every member there. (a) covers rank(y) < S, (b) rank(y) >= S,
  so nothing is missed or doubled.
- The comparison in (a) and (b) first looks at 32 bits outside the block (a block has at most 22 bits,
  so 42+ lie outside; the table stores 32 of them as uint32): a pair's distance is popcount(m) plus
  the distance outside the block, so a candidate whose 32 outside bits already differ in more than
  D - popcount(m) places cannot be a pair and is dropped (a necessary condition, never a false
  negative). The few survivors are verified on all 64 bits.
- A pair within D may qualify in several blocks; it is kept only in the first block where its block
  distance is within that block's radius, so each pair comes out exactly once.

At 1M hashes and D = 8 this probes ~420M (hash, mask) combinations and verifies ~0.75M survivors on all
64 bits (`stats["candidates"]`); the previous bucket-by-bucket join (138M candidates gathered and verified
through int64 position arrays) took 3.5-4.5x longer. Memory is O(n + 2^22 * S) per block plus the survivors;
blocks are searched one after another. Pairs inside one bucket are filtered on their outside bits as they
are listed, like the probes' (they were once kept whole until the final check: a 10M-hash search peaked at
1,986 MiB at D = 4, now 1,179, and 2,254 at D = 8, now 1,313, with the same pairs; benchmarks/RESULTS.md).

Why not faiss IndexBinaryMultiHash: it is the same idea (nhash tables, nflip flips), but it probes a
std::unordered_map per query hash and per flip pattern; at 100k hashes it was 3-7x slower than our
previous (slower) search, with identical pairs. And the search also has to run as a Dask/Spark dataframe
join (curate.dedup.frames), where a faiss index does not exist; that job uses the same pigeonhole cover
(with its own cost model for exploded and joined rows), and since both are exact every engine finds the
same pairs.

Exact duplicates (identical hashes) are collapsed before the search: a placeholder image copied 100k times
is one distinct hash, not 5e9 pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

BITS = 64
MAX_BLOCK_BITS = 22  # direct-addressed buckets: 2^22 starts, counts and first members
_CHUNK = 1 << 15  # probes per numpy call in pass (a): its temporaries stay in L2
_M32 = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class Block:
    shift: int  # block value = (hash >> shift) & ((1 << nbits) - 1)
    nbits: int
    radius: int

    @property
    def mask(self) -> int:
        return (1 << self.nbits) - 1


@dataclass(frozen=True)
class Plan:
    max_distance: int
    blocks: tuple[Block, ...]
    bits: int = BITS  # the values' width: the blocks cover bits 0 .. bits-1 (a group search drops shared bits)

    def describe(self) -> str:
        return f"D={self.max_distance}: " + ", ".join(f"{b.nbits} bits r{b.radius}" for b in self.blocks)


def ball_size(nbits: int, radius: int) -> int:
    return sum(math.comb(nbits, r) for r in range(radius + 1))


def flip_masks(nbits: int, radius: int) -> np.ndarray:
    """All nbits-bit masks with at most `radius` bits set, mask 0 first."""
    out = [0]
    for r in range(1, radius + 1):
        for bits in combinations(range(nbits), r):
            out.append(sum(1 << b for b in bits))
    return np.array(out, dtype=np.int64)


def _split(m: int, bits: int = BITS) -> list[int]:
    base, extra = divmod(bits, m)
    return [base + 1 if i < extra else base for i in range(m)]


def _radii(widths: list[int], max_distance: int) -> list[int]:
    """Spread sum(t_i) = D + 1 - m over the blocks, wider blocks first (their buckets are sparser)."""
    m = len(widths)
    total = max(0, max_distance + 1 - m)
    radii = [total // m] * m
    for i in range(total % m):
        radii[i] += 1
    return radii


def plan_cost(n: int, widths, radii) -> float:
    """Estimated work of a plan for n distinct hashes, in probe units: per block a table build (~n + 2^w),
    n/2 probes per non-zero flip mask, and one comparison per bucket member met (n^2/2 * ball / 2^w)."""
    cost = 0.0
    for w, t in zip(widths, radii):
        ball = ball_size(w, t)
        cost += 8.0 * n + 2.0 ** w / 4 + n / 2 * (ball - 1) + n * n / 2 * ball / 2.0 ** w
    return cost


def make_plan(n: int, max_distance: int, cost=plan_cost, max_block_bits: int = MAX_BLOCK_BITS, bits: int = BITS) -> Plan:
    """The block plan with the least estimated work for n distinct hashes (`cost(n, widths, radii)`;
    default plan_cost) among plans of blocks at most `max_block_bits` wide, over values of `bits` bits (all
    higher bits zero)."""
    if not 0 <= max_distance < BITS:
        raise ValueError(f"max distance must be in 0..{BITS - 1}, got {max_distance}")
    if not 1 <= bits <= BITS:
        raise ValueError(f"bits must be in 1..{BITS}, got {bits}")
    fewest = math.ceil(bits / max_block_bits)
    best = None
    # With fewer than D + 1 blocks some radius is positive; with `fewest` > D + 1 blocks all radii are 0.
    for m in range(fewest, max(fewest, min(bits, max_distance + 1)) + 1):
        widths = _split(m, bits)
        radii = _radii(widths, max_distance)
        c = cost(n, widths, radii)
        if best is None or c < best[0]:
            best = (c, widths, radii)
    _, widths, radii = best
    blocks, shift = [], bits
    for w, t in zip(widths, radii):
        shift -= w
        blocks.append(Block(shift, w, t))
    return Plan(max_distance, tuple(blocks), bits)


# --- one block's table ----------------------------------------------------------------------------------


def _outside32(values: np.ndarray, blk: Block, bits: int = BITS) -> np.ndarray:
    """32 bits of each `bits`-bit hash outside the block (the bits above it, wrapping round to the lowest)."""
    rot = values
    if blk.shift:
        rot = (values >> np.uint64(blk.shift)) | (values << np.uint64(BITS - blk.shift))
        if bits < BITS:  # wrap within the value's width, not the word's
            rot = (values >> np.uint64(blk.shift)) | ((values << np.uint64(bits - blk.shift)) & np.uint64((1 << bits) - 1))
    return ((rot >> np.uint64(blk.nbits)) & _M32).astype(np.uint32)


def _sort_order(keys: np.ndarray, nbits: int) -> np.ndarray | None:
    """Stable order of `keys` (< 2^nbits); None if already sorted. LSD radix in 16-bit digits (numpy
    argsorts 16-bit integers by radix sort), faster than a comparison sort of int64."""
    if len(keys) < 2 or bool(np.all(keys[1:] >= keys[:-1])):
        return None
    if nbits <= 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    low = nbits // 2
    order = np.argsort((keys & ((1 << low) - 1)).astype(np.uint16), kind="stable")
    return order[np.argsort((keys[order] >> low).astype(np.uint16), kind="stable")]


def slots_for(n: int, nbits: int) -> int:
    """How many members per bucket the probe table holds: the smallest power of two that leaves under a
    quarter of the hashes to the slower later-member pass (Poisson estimate: n hashes over 2^nbits
    buckets). Measured at 1M hashes (1 slot) and 10M (4-8 slots): wider rows cost more per probe than
    the later-member pass saves until buckets hold several hashes."""
    lam = n / 2.0 ** nbits
    slots = 1
    while slots < 64 and lam > 0:
        p = math.exp(-lam)  # P(count = c), walked up from c = 0
        for c in range(1, slots + 1):
            p *= lam / c
        beyond = 0.0  # expected members past the slots, per bucket
        c = slots
        while True:
            c += 1
            p *= lam / c
            beyond += (c - slots) * p
            if c > lam and p < 1e-9:
                break
        if beyond / lam < 0.25:
            break
        slots *= 2
    return slots


class _Table:
    """Distinct hashes sorted by one block's value: bucket k is sorted[start[k]:start[k] + count[k]]."""

    def __init__(self, values: np.ndarray, blk: Block, slots: int | None = None, bits: int = BITS):
        n = len(values)
        keys = ((values >> np.uint64(blk.shift)) & np.uint64(blk.mask)).astype(np.int64)
        self.order = _sort_order(keys, blk.nbits)
        if self.order is None:
            self.keys, self.values = keys, values
        else:
            self.keys, self.values = keys[self.order], values[self.order]
        counts = np.bincount(self.keys, minlength=1 << blk.nbits)
        self.start = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=self.start[1:])
        self.most = int(counts.max()) if n else 0
        self.count = counts.astype(np.min_scalar_type(self.most))  # 2^22 buckets: 4 MB as uint8, 32 as int64
        self.outside = _outside32(self.values, blk, bits)
        # the outside bits of each bucket's first `slots` members, one row per bucket (unused slots: 0,
        # never reported because a hit's slot must be below the bucket's count)
        self.slots = slots or slots_for(n, blk.nbits)
        self.shift = self.slots.bit_length() - 1
        self.table = np.zeros((len(counts), self.slots), np.uint32)
        self._rank = None
        if n:
            if self.slots == 1 or self.most == 1:
                self.table[:, 0] = self.outside[np.minimum(self.start[:-1], n - 1)]
            else:
                rank = self.rank()
                inside = rank < self.slots
                self.table[self.keys[inside], rank[inside]] = self.outside[inside]

    def positions(self, p: np.ndarray) -> np.ndarray:
        return p if self.order is None else self.order[p]

    def rank(self) -> np.ndarray:
        """Each sorted hash's place inside its bucket (0 = first member)."""
        if self._rank is None:
            self._rank = np.arange(len(self.keys), dtype=np.int64) - self.start[self.keys]
        return self._rank


def _probe_slots(kq, oq, m: int, limit: int, t: _Table, out: list, buf) -> int:
    """Queries (block values kq, outside bits oq) against the first `t.slots` members of bucket kq ^ m:
    appends (query index, table position) where that member exists and the outside bits differ <= limit."""
    n = len(kq)
    bk, bx, bc = buf
    step = len(bk) >> t.shift
    for s in range(0, n, step):
        e = min(n, s + step)
        k2 = np.bitwise_xor(kq[s:e], m, out=bk[:e - s])
        rows = bx[:(e - s) << t.shift].reshape(e - s, t.slots)
        np.take(t.table, k2, axis=0, out=rows)
        np.bitwise_xor(rows, oq[s:e, None], out=rows)
        hit = np.flatnonzero(np.bitwise_count(rows, out=bc[:(e - s) << t.shift].reshape(rows.shape)) <= limit)
        if len(hit):
            qi, slot = hit >> t.shift, hit & (t.slots - 1)
            kk = k2[qi]
            keep = slot < t.count[kk]
            out.append((qi[keep] + s, t.start[kk[keep]] + slot[keep]))
    return n


def _probe_all(kq, oq, m: int, limit: int, t: _Table, out: list, buf) -> int:
    """Queries against every member of bucket kq ^ m (the slots as above, members beyond them directly)."""
    n = _probe_slots(kq, oq, m, limit, t, out, buf)
    if t.most <= t.slots or not len(kq):
        return n
    k2 = kq ^ m
    c = t.count[k2]
    g = np.flatnonzero(c > t.slots)
    at = t.start[k2[g]] + (t.slots - 1)
    r = t.slots
    while len(g):
        at = at + 1
        hit = np.flatnonzero(np.bitwise_count(t.outside[at] ^ oq[g]) <= limit)
        if len(hit):
            out.append((g[hit], at[hit]))
        r += 1
        more = c[g] > r
        g, at = g[more], at[more]
    return n


def _by_high_bit(masks) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for m in masks:
        groups.setdefault(int(m).bit_length() - 1, []).append(int(m))
    return groups


def _self_block(t: _Table, blk: Block, d: int, buf) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Candidate pairs (sorted positions p, q) of one block's self-join; every pair with block distance
    <= blk.radius and outside-32-bit distance <= d - block distance appears exactly once. Also the probes
    made and the pairs inside buckets compared and dropped on their outside bits (candidates too, though
    never listed: a bucket pair held until the final check costs 16 bytes, and a 3M-hash block group of
    `xlarge` held ~1.7 GB of them, measured by benchmarks/group_search_bench.py)."""
    ps, qs = [], []
    probes = dropped = 0
    rank = t.rank() if t.most > 1 else None
    if rank is not None:  # m = 0: every pair inside a bucket, as (member, member r places later)
        q = np.flatnonzero(rank >= 1)
        r = 1
        while len(q):
            p = q - r
            near = np.bitwise_count(t.outside[p] ^ t.outside[q]) <= d  # block distance 0: outside <= d
            ps.append(p[near])
            qs.append(q[near])
            dropped += len(q) - len(ps[-1])
            r += 1
            q = q[rank[q] >= r]
    for h, ms in _by_high_bit(flip_masks(blk.nbits, blk.radius)[1:]).items():
        high = (t.keys & (1 << h)) != 0
        low = ~high
        sel = np.flatnonzero(low)  # (a) low-side hashes against first members
        kq, oq = np.compress(low, t.keys), np.compress(low, t.outside)
        found: list = []
        for m in ms:
            probes += _probe_slots(kq, oq, m, d - m.bit_count(), t, found, buf)
        for a, b in found:
            ps.append(sel[a])
            qs.append(b)
        if t.most > t.slots:  # (b) later members (rank >= slots) on the high side against whole buckets
            later = np.flatnonzero(high & (rank >= t.slots))
            kq, oq = t.keys[later], t.outside[later]
            found = []
            for m in ms:
                probes += _probe_all(kq, oq, m, d - m.bit_count(), t, found, buf)
            for a, b in found:
                ps.append(b)
                qs.append(later[a])
    if not ps:
        e = np.zeros(0, np.int64)
        return e, e.copy(), probes, dropped
    return np.concatenate(ps), np.concatenate(qs), probes, dropped


def _cross_block(tq: _Table, tb: _Table, blk: Block, d: int, buf) -> tuple[np.ndarray, np.ndarray, int]:
    """Candidate pairs (query sorted position, base sorted position): every query against every member of
    every base bucket within the block's radius."""
    ps, qs = [], []
    probes = 0
    found: list = []
    for m in flip_masks(blk.nbits, blk.radius).tolist():
        probes += _probe_all(tq.keys, tq.outside, m, d - m.bit_count(), tb, found, buf)
    for a, b in found:
        ps.append(a)
        qs.append(b)
    if not ps:
        e = np.zeros(0, np.int64)
        return e, e.copy(), probes
    return np.concatenate(ps), np.concatenate(qs), probes


def _first_block_only(x: np.ndarray, plan: Plan, upto: int) -> np.ndarray:
    """True where the pair (its XOR) is within D and within no earlier block's radius."""
    ok = np.bitwise_count(x) <= plan.max_distance
    for blk in plan.blocks[:upto]:
        ok &= np.bitwise_count((x >> np.uint64(blk.shift)) & np.uint64(blk.mask)) > blk.radius
    return ok


def _pairs(query: np.ndarray, base: np.ndarray | None, plan: Plan, stats: dict | None,
           slots: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core join of DISTINCT values. base None: self-join of `query` (pairs i < j). Else query x base."""
    self_join = base is None
    out_i, out_j, out_x = [], [], []
    probes = verified = 0
    buf = (np.empty(_CHUNK, np.int64), np.empty(_CHUNK, np.uint32), np.empty(_CHUNK, np.uint8))
    for bi, blk in enumerate(plan.blocks):
        tb = _Table(query if self_join else base, blk, slots, plan.bits)
        if self_join:
            tq = tb
            p, q, n, dropped = _self_block(tb, blk, plan.max_distance, buf)
        else:
            tq = _Table(query, blk, 1, plan.bits)
            p, q, n = _cross_block(tq, tb, blk, plan.max_distance, buf)
            dropped = 0
        probes += n
        verified += len(p) + dropped
        x = tq.values[p] ^ tb.values[q]
        ok = _first_block_only(x, plan, bi)
        a, b, x = tq.positions(p[ok]), tb.positions(q[ok]), x[ok]
        if self_join:
            a, b = np.minimum(a, b), np.maximum(a, b)
        out_i.append(a)
        out_j.append(b)
        out_x.append(x)
        del tb, tq
    if stats is not None:
        stats.update({"plan": plan.describe(), "probes": int(probes), "candidates": int(verified)})
    i, j, x = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_x)
    order = np.lexsort((j, i))
    return i[order].astype(np.int64), j[order].astype(np.int64), np.bitwise_count(x[order]).astype(np.int8)


def _expand(a_start, a_count, b_start, b_count, a_order, b_order):
    """Every (a, b) of the cross product of bucket pairs, as positions into the hash arrays."""
    one = (a_count == 1) & (b_count == 1)  # the common case
    if one.all():
        return a_order[a_start], b_order[b_start]
    a1, b1 = a_order[a_start[one]], b_order[b_start[one]]
    many = ~one
    a_start, a_count, b_start, b_count = a_start[many], a_count[many], b_start[many], b_count[many]
    n = a_count * b_count
    total = int(n.sum())
    which = np.repeat(np.arange(len(n)), n)
    first = np.cumsum(n) - n
    off = np.arange(total, dtype=np.int64) - first[which]
    bc = b_count[which]
    a = a_order[a_start[which] + off // bc]
    b = b_order[b_start[which] + off % bc]
    return np.concatenate([a1, a]), np.concatenate([b1, b])


def _distinct(values: np.ndarray):
    """Sorted distinct values, and for each a contiguous range of `order` listing its positions."""
    order = np.argsort(values, kind="stable")
    s = values[order]
    head = np.ones(len(s), bool)
    head[1:] = s[1:] != s[:-1]
    uniq = s[head]
    starts = np.flatnonzero(np.append(head, True)).astype(np.int64)
    return uniq, order, starts[:-1], np.diff(starts)


def distinct_pairs(values: np.ndarray, max_distance: int, plan: Plan | None = None, stats: dict | None = None,
                   slots: int | None = None):
    """Pairs (i, j, distance), i < j, of DISTINCT uint64 `values` within `max_distance` bits; sorted.
    `plan` and `slots` (members per bucket in the probe table) default to the cost model's choice."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    s = np.sort(values)
    if len(s) > 1 and bool(np.any(s[1:] == s[:-1])):
        raise ValueError("distinct_pairs needs distinct values; use near_pairs for arrays with repeats")
    plan = plan or make_plan(len(values), max_distance)
    if plan.bits < BITS and len(values) and int(values.max()) >> plan.bits:
        raise ValueError(f"the plan covers {plan.bits} bits, but some value has higher bits set")
    return _pairs(values, None, plan, stats, slots)


def near_pairs(values: np.ndarray, max_distance: int, stats: dict | None = None):
    """Pairs (i, j, distance), i < j, of positions in `values` (repeats allowed) within `max_distance`."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    uniq, order, starts, cnt = _distinct(values)
    ui, uj, _ = _pairs(uniq, None, make_plan(len(uniq), max_distance), stats)
    a, b = _expand(starts[ui], cnt[ui], starts[uj], cnt[uj], order, order)
    d = np.bitwise_count(values[a] ^ values[b]).astype(np.int8)
    # exact repeats: all pairs within each distinct value
    multi = np.flatnonzero(cnt > 1)
    ea, eb = _expand(starts[multi], cnt[multi], starts[multi], cnt[multi], order, order)
    keep = ea < eb
    i = np.concatenate([np.minimum(a, b), ea[keep]])
    j = np.concatenate([np.maximum(a, b), eb[keep]])
    d = np.concatenate([d, np.zeros(int(keep.sum()), np.int8)])
    o = np.lexsort((j, i))
    return i[o], j[o], d[o]


def cross_pairs(query: np.ndarray, base: np.ndarray, max_distance: int, stats: dict | None = None):
    """Pairs (query position, base position, distance) within `max_distance`, repeats on either side allowed."""
    query = np.ascontiguousarray(query, dtype=np.uint64)
    base = np.ascontiguousarray(base, dtype=np.uint64)
    uq, qo, qs, qc = _distinct(query)
    ub, bo, bs, bc = _distinct(base)
    plan = make_plan(max(len(uq), len(ub)), max_distance)
    if len(uq) <= len(ub):  # the smaller side probes the larger side's buckets
        qi, bj, _ = _pairs(uq, ub, plan, stats)
    else:
        bj, qi, _ = _pairs(ub, uq, plan, stats)
    a, b = _expand(qs[qi], qc[qi], bs[bj], bc[bj], qo, bo)
    dd = np.bitwise_count(query[a] ^ base[b]).astype(np.int8)
    o = np.lexsort((b, a))
    return a[o], b[o], dd[o]


def brute_force_pairs(values: np.ndarray, max_distance: int):
    """Reference: all pairs i < j within distance, by comparing everything (small inputs only)."""
    values = np.asarray(values, dtype=np.uint64)
    out_i, out_j, out_d = [], [], []
    for i in range(len(values) - 1):
        d = np.bitwise_count(values[i + 1:] ^ values[i])
        j = np.flatnonzero(d <= max_distance)
        out_i.append(np.full(len(j), i, np.int64))
        out_j.append(j + i + 1)
        out_d.append(d[j].astype(np.int8))
    if not out_i:
        e = np.zeros(0, np.int64)
        return e, e.copy(), np.zeros(0, np.int8)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


# --- hex parsing -------------------------------------------------------------------------------------------

_HEX = np.full(256, 255, dtype=np.uint8)
for _c in b"0123456789":
    _HEX[_c] = _c - ord("0")
for _c in b"abcdef":
    _HEX[_c] = _c - ord("a") + 10
    _HEX[_c - 32] = _c - ord("a") + 10


def parse_hex64(texts) -> tuple[np.ndarray, np.ndarray]:
    """16-hex-character strings (arrow or Python; nulls allowed) -> (uint64 values, valid mask).

    A row is valid when it is exactly 16 hex digits; nulls and malformed strings get valid=False, value 0.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.string())
    arr = arr.cast(pa.string())
    n = len(arr)
    valid = np.asarray(pc.fill_null(pc.equal(pc.binary_length(arr), 16), False).to_numpy(zero_copy_only=False), dtype=bool)
    values = np.zeros(n, dtype=np.uint64)
    idx = np.flatnonzero(valid)
    if len(idx):
        sel = arr.take(pa.array(idx))  # a fresh array: its 16-byte strings lie back to back
        start = int(np.frombuffer(sel.buffers()[1], dtype=np.int32)[sel.offset])
        raw = np.frombuffer(sel.buffers()[2], dtype=np.uint8)[start:start + 16 * len(idx)].reshape(len(idx), 16)
        nib = _HEX[raw]
        good = (nib != 255).all(axis=1)
        nib = np.where(nib == 255, 0, nib).astype(np.uint64)
        shifts = np.arange(60, -4, -4, dtype=np.uint64)
        v = np.bitwise_or.reduce(nib << shifts, axis=1)
        values[idx] = np.where(good, v, 0)
        valid[idx[~good]] = False
    return values, valid


def chance_pairs(n: int, max_distance: int, bits: int = BITS) -> float:
    """Expected pairs within `max_distance` bits among n distinct uniform random hashes: C(n, 2) times the chance
    that two such hashes differ in at most D of their bits. Real pHashes are less uniform (smooth images share
    bits), so a real pool has at least about this many pairs of unrelated images. It grows as n²: at D = 8, ~1.4M
    among 100M hashes (measured: 5.43M pairs = the planted 4.09M + 1.35M), ~23G among DataComp xlarge's 12.8B, more
    pairs than hashes, so chance neighbours alone would chain much of the pool into one group."""
    ball = sum(math.comb(bits, k) for k in range(min(max_distance, bits) + 1))
    return n * (n - 1) / 2 * ball / 2.0 ** bits


def safe_distance(n: int, max_distance: int, share: float = 0.01) -> int:
    """The largest D' <= max_distance whose chance pairs (`chance_pairs`) stay within `share` of n."""
    d = max_distance
    while d > 0 and chance_pairs(n, d) > share * n:
        d -= 1
    return d


__all__ = ["Block", "Plan", "brute_force_pairs", "chance_pairs", "safe_distance", "cross_pairs", "distinct_pairs", "flip_masks", "make_plan", "near_pairs", "parse_hex64"]
