"""The report's rejected duplicates show the copy their group kept (uid and image), through the `curate` CLI."""

from __future__ import annotations

import re

import pytest

from curate.dedup.kept import kept_copies
from tests.curate.report_pools import COPIES, dedup_report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return dedup_report(tmp_path_factory.mktemp("dedup_report"))


def _cards(page: str, kind: str) -> dict[str, str]:
    """data-uid -> the card's HTML, for the cards of one kind."""
    chunks = page.split("<div class='card ")[1:]
    return {re.match(r"\w+' data-uid='([0-9a-f]+)'", c).group(1): c for c in chunks if c.startswith(f"{kind}'")}


def test_rejected_duplicates_show_the_kept_copy(report):
    out, uids = report
    page = (out / "report.html").read_text()
    rejected = _cards(page, "rejected")
    dups = {uid: card for uid, card in rejected.items() if "duplicate" in card and "not_deduplicated" not in card}
    assert {uids[j] for j in COPIES} == set(dups)  # every copy that dedup dropped is an example here
    for j, kept in COPIES.items():
        card = dups[uids[j]]
        assert f"duplicate of <code>{uids[kept]}</code>" in card
        srcs = re.findall(r"<img src='([^']+)'", card)
        assert len(srcs) == 2 and srcs[0].startswith("data:image/jpeg") and srcs[0] == srcs[1]  # the same bytes
        assert f"class=kept-copy data-uid='{uids[kept]}'" in card
    # a row dedup could not judge (no image, so no hash) says so, with no kept copy
    others = [c for c in rejected.values() if "not_deduplicated" in c]
    assert others and not any("kept-copy" in c for c in others)


def test_kept_copies_reads_the_groups(report):
    out, uids = report
    pool = out.parent / "pool"
    got = kept_copies(pool, "sha256", [uids[1], uids[9], uids[4], "0" * 32])
    assert got == {uids[1]: uids[0], uids[9]: uids[5], uids[4]: uids[4], "0" * 32: None}
    assert kept_copies(pool, "phash", [uids[1]]) == {}  # no phash dedup was run
