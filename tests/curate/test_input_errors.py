"""Malformed inputs a user may hand `curate`: each is one line that names the file and what is wrong."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import cli
from curate.demo.metadata import generate_metadata
from curate.uids import UID_DTYPE
from tests.curate.helpers import write_metadata_pool, write_shard_pool


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_subset_header_claiming_more_rows_than_the_file_holds(tmp_path, capsys):
    write_shard_pool(tmp_path / "pool", [5])
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(UID_DTYPE),
                                                  "fortran_order": False, "shape": (10**12,)})
    subset = tmp_path / "huge.npy"
    subset.write_bytes(header.getvalue() + bytes(48))  # 3 rows of data under a header of 10^12
    assert cli.main(["reshard", "--pool", str(tmp_path / "pool"), "--subset", str(subset),
                     "--output", str(tmp_path / "out"), "--processes", "1"]) == 2
    err = one_line_error(capsys)
    assert str(subset) in err and "1000000000000 rows" in err and "48 bytes" in err


def _run(pool, out, *filters):
    args = ["run", "--pool", str(pool), "--output", str(out), "--no-report", "--processes", "1"]
    for f in filters:
        args += ["--filter", f]
    return cli.main([*args, "--fraction", "0.3", "--arch", "b32"] if "clip_score" in filters else args)


def test_metadata_files_with_different_schemas(tmp_path, capsys):
    paths = write_metadata_pool(tmp_path / "pool", [30, 30])
    t = pq.read_table(paths[1])
    i = t.column_names.index("clip_b32_similarity_score")
    as_text = [f"{v:.4f}" for v in t.column(i).to_pylist()]
    as_text[3] = "None"  # as str() of a missing score writes it
    t = t.set_column(i, "clip_b32_similarity_score", pa.array(as_text))
    pq.write_table(t, paths[1])
    assert _run(tmp_path / "pool", tmp_path / "out", "clip_score") == 2
    err = one_line_error(capsys)
    assert str(paths[1]) in err and str(paths[0]) in err and "'clip_b32_similarity_score' is string, but float" in err
    assert not (tmp_path / "out" / "subset.npy").exists()


def test_a_string_column_that_is_not_utf8(tmp_path, capsys):
    """Parquet's readers do not check that a string column is UTF-8; a caption with stray bytes must not fail
    later as a decoding error that names no file."""
    d = tmp_path / "pool" / "metadata"
    d.mkdir(parents=True)
    t = generate_metadata(20, seed=4)
    raw = [(s or "").encode() for s in t.column("text").to_pylist()]
    raw[5] = b"caf\xe9 au lait \xff"
    binary = pa.array(raw, pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())  # no check, as another writer may do
    pq.write_table(t.set_column(t.column_names.index("text"), "text", text), d / "00000000.parquet")
    assert _run(tmp_path / "pool", tmp_path / "out", "basic") == 2
    err = one_line_error(capsys)
    assert str(d / "00000000.parquet") in err and "'text'" in err and "row 5 is not valid UTF-8" in err


def test_a_binary_caption_column_is_read_as_captions(tmp_path, capsys):
    """Captions stored as binary are valid input: bytes that are not UTF-8 count as a missing caption."""
    d = tmp_path / "pool" / "metadata"
    d.mkdir(parents=True)
    t = generate_metadata(20, seed=4)
    raw = [(s or "").encode() for s in t.column("text").to_pylist()]
    raw[5] = b"caf\xe9 au lait \xff"
    pq.write_table(t.set_column(t.column_names.index("text"), "text", pa.array(raw, pa.binary())), d / "00000000.parquet")
    assert _run(tmp_path / "pool", tmp_path / "out", "basic") == 0


def test_a_score_column_of_strings_names_the_file(tmp_path, capsys):
    """A score column of text in one metadata file: the threshold pass (--fraction) and the filter pass
    (--threshold) each say which file, in one line, on one file and on several."""
    for files in (1, 2):
        pool = tmp_path / f"pool{files}"
        (pool / "metadata").mkdir(parents=True)
        for i in range(files):
            t = generate_metadata(20, seed=i)
            t = t.set_column(t.column_names.index("clip_b32_similarity_score"), "clip_b32_similarity_score",
                             pa.array(["high"] * 20))
            pq.write_table(t, pool / "metadata" / f"{i:08d}.parquet")
        for how in (["--fraction", "0.3"], ["--threshold", "0.3"]):
            assert cli.main(["run", "--pool", str(pool), "--output", str(tmp_path / "out"), "--no-report", "--processes", "1",
                             "--filter", "clip_score", "--arch", "b32", *how]) == 2
            err = one_line_error(capsys)
            assert str(pool / "metadata") in err and ".parquet" in err and "'high'" in err, err
