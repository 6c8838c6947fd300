"""How often py3langid (our offline default) agrees with fastText lid.176 (DataComp's detector).

    .venv/bin/python benchmarks/langid_agreement.py --fasttext-model lid.176.bin|lid.176.ftz [--pool POOL] [--n 200000]

DataComp's `basic` and `laion2b` keep captions whose fastText language is English, so the number that matters
is agreement on "is English" (and on the language code, for reference). Captions come from a pool's metadata
(default: the generated 12.8M pool of benchmarks/curate_run_bench.py, word salad in several languages) and
from the demo world's caption templates. lid.176 is not on a fresh machine: the model path is the user's.
Prints a markdown table; also the speed of each detector on the same captions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.signals.language import LanguageDetector  # noqa: E402


def pool_captions(pool: Path, n: int, seed: int = 0) -> list[str]:
    files = sorted((pool / "metadata").glob("*.parquet"))
    per_file = -(-n // len(files))
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for f in files:
        text = pq.read_table(f, columns=["text"]).column("text")
        rows = rng.choice(len(text), min(per_file, len(text)), replace=False)
        out.extend(t for t in text.take(np.sort(rows)).to_pylist() if t)
    return out[:n]


def demo_captions(n: int, seed: int = 0) -> list[str]:
    from curate.demo.world import COLORS, FOREIGN, SHAPES

    rng = np.random.default_rng(seed)
    colors = list(COLORS)
    templates = ["a photo of a {color} {shape}", *FOREIGN]
    return [templates[rng.integers(len(templates))].format(color=colors[rng.integers(len(colors))],
                                                           shape=SHAPES[rng.integers(len(SHAPES))]) for _ in range(n)]


def compare(captions: list[str], fasttext_model: str) -> dict:
    results = {}
    for name, model in (("py3langid", None), ("fastText", fasttext_model)):
        det = LanguageDetector(model)
        det._detect_one("warm up")
        t0 = time.perf_counter()
        langs = [det._detect_one(c)[0] for c in captions]  # no memo: speed per caption
        results[name] = (np.array(langs), len(captions) / (time.perf_counter() - t0))
    a, b = results["py3langid"][0], results["fastText"][0]
    return {"n": len(captions), "code": float((a == b).mean()), "english": float(((a == "en") == (b == "en")).mean()),
            "en_py3langid": float((a == "en").mean()), "en_fasttext": float((b == "en").mean()),
            "rate_py3langid": results["py3langid"][1], "rate_fasttext": results["fastText"][1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fasttext-model", required=True)
    ap.add_argument("--pool", type=Path, default=REPO / "benchmarks" / "_work" / "pool-12800000x32")
    ap.add_argument("--n", type=int, default=200_000)
    args = ap.parse_args()
    sets = [("demo world captions (templates in en/fr/de/es)", demo_captions(20_000))]
    if (args.pool / "metadata").is_dir():
        sets.insert(0, (f"{args.pool.name} captions (generated word salad)", pool_captions(args.pool, args.n)))
    print(f"### py3langid vs fastText {Path(args.fasttext_model).name} (`benchmarks/langid_agreement.py`)\n")
    print("| captions | n | same language code | same English decision | English: py3langid | English: fastText "
          "| captions/s py3langid | captions/s fastText |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, caps in sets:
        r = compare(caps, args.fasttext_model)
        print(f"| {label} | {r['n']:,} | {r['code']:.2%} | {r['english']:.2%} | {r['en_py3langid']:.2%} | "
              f"{r['en_fasttext']:.2%} | {r['rate_py3langid']:,.0f} | {r['rate_fasttext']:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
