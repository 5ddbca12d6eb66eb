"""The vectorised HKL reader (``hkl._parse_plain``) accepts and refuses exactly what the previous reader
did, with bit-identical values and the same error (message and line) for every refused file.

The oracle is a verbatim copy of the previous implementation (``_parse_records`` and
``_raise_first_bad_line`` as they were before the fast path, and ``read_hkl``'s table building)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bragg_dask.errors import InputFileError
from bragg_dask.io import hkl as H
from bragg_dask.io.textfile import PLAIN_NUMERIC, parse_integer, parse_number

# ----------------------------------------------------------------------------- the oracle (old code)


def _old_parse_records(text: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    lines = text.splitlines()
    tokens = text.split()
    if PLAIN_NUMERIC.fullmatch(text) and all(len(ln.split()) == 4 for ln in lines if ln.strip()):
        try:
            arr = np.array(tokens, dtype=object).reshape(-1, 4)
            hkl = arr[:, :3].astype(np.int64)
            F = arr[:, 3].astype(np.float64)
            if np.isfinite(F).all() and (np.abs(hkl) < 2**31).all():
                return hkl, F
        except (ValueError, OverflowError):
            pass
    _old_raise_first_bad_line(lines, name)
    raise AssertionError("unreachable")


def _old_raise_first_bad_line(lines: list[str], name: str) -> None:
    for no, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise InputFileError(name, no, f"expected 4 columns 'h k l F', found {len(parts)}: {line.strip()!r}")
        for tok in parts[:3]:
            try:
                h = parse_integer(tok)
            except ValueError:
                raise InputFileError(name, no, f"Miller index {tok!r} is not an integer") from None
            if abs(h) >= 2**31:
                raise InputFileError(name, no, f"Miller index {tok!r} is out of range")
        try:
            f = parse_number(parts[3])
        except ValueError:
            raise InputFileError(name, no, f"structure factor {parts[3]!r} is not a number") from None
        if not np.isfinite(f):
            raise InputFileError(name, no, f"structure factor {parts[3]!r} is not finite")
    raise InputFileError(name, None, "unreadable HKL file")


def _old_table(hkl: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    lo = hkl.min(axis=0)
    hi = hkl.max(axis=0)
    shape = tuple(int(x) for x in (hi - lo + 1))
    table = np.full(shape, 0.0, dtype=np.float64)
    idx = hkl - lo
    table[idx[:, 0], idx[:, 1], idx[:, 2]] = F
    return table, tuple(int(x) for x in lo)


# ----------------------------------------------------------------------------- helpers


def outcome(parse, text: str):
    try:
        hkl, F = parse(text, "F.hkl")
    except InputFileError as exc:
        return ("error", str(exc), exc.line)
    return ("ok", hkl, F)


def assert_same(text: str) -> tuple:
    """The new ``_parse_records`` and the old one agree on ``text``; returns the outcome."""
    new = outcome(H._parse_records, text)
    old = outcome(_old_parse_records, text)
    assert new[0] == old[0], (text, new, old)
    if new[0] == "error":
        assert new[1:] == old[1:], text
    else:
        assert new[1].dtype == old[1].dtype == np.int64 and new[1].shape == old[1].shape, text
        assert np.array_equal(new[1], old[1]), text
        assert new[2].dtype == old[2].dtype == np.float64 and new[2].shape == old[2].shape, text
        assert np.array_equal(new[2].view(np.int64), old[2].view(np.int64)), text  # bit for bit (-0.0)
    return new


def fast(text: str):
    """The fast path's own answer (``None``: it hands the text to the general path)."""
    return H._parse_plain(text)


def bench_like(n: int, seed: int, fmt: str = "{:.2f}", newline: str = "\n") -> str:
    rng = np.random.default_rng(seed)
    h, k, l = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), np.arange(-n // 2, n // 2 + 1), indexing="ij")
    F = rng.uniform(0, 200, h.size)
    return "".join(f"{a} {b} {c} {fmt.format(v)}{newline}" for a, b, c, v in zip(h.ravel(), k.ravel(), l.ravel(), F))


@pytest.fixture(params=[None, 13], ids=["one-block", "tiny-blocks"])
def blocks(request, monkeypatch):
    """Run a test as it is, and again with the text cut into blocks of a few lines."""
    if request.param:
        monkeypatch.setattr(H, "_BLOCK", request.param)
    return request.param


# ----------------------------------------------------------------------------- valid layouts


@pytest.mark.parametrize("block", [None, 4000])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_bench_like_files(newline, block, monkeypatch):
    if block:
        monkeypatch.setattr(H, "_BLOCK", block)
    text = bench_like(10, seed=1, newline=newline)
    got = assert_same(text)
    assert got[0] == "ok" and len(got[2]) == 21 * 21 * 11
    assert fast(text) is not None  # taken by the fast path


def test_bench_like_table_through_read_hkl(tmp_path):
    text = bench_like(12, seed=2)
    path = tmp_path / "F.hkl"
    path.write_text(text)
    sf = H.read_hkl(path)
    table, lo = _old_table(*_old_parse_records(text, str(path)))
    assert sf.hkl_min == lo and sf.n_records == 25 * 25 * 13
    assert np.array_equal(sf.values.view(np.int64), table.view(np.int64))


def test_read_hkl_duplicates_last_wins(tmp_path):
    path = tmp_path / "F.hkl"
    path.write_text("0 0 0 1\n1 -2 3 2.5\n0 0 0 7\n1 -2 3 -0\n")
    sf = H.read_hkl(path)
    table, lo = _old_table(*_old_parse_records(path.read_text(), str(path)))
    assert sf.hkl_min == lo == (0, -2, 0)
    assert np.array_equal(sf.values.view(np.int64), table.view(np.int64))
    assert sf.values[0, 2, 0] == 7 and math.copysign(1, sf.values[1, 0, 3]) == -1


@pytest.mark.parametrize(
    "text",
    [
        "\n\n0 0 0 1\n\n\n1 2 3 4\n\n",  # blank lines
        "   \t\n0 0 0 1\n \t \n1 2 3 4",  # blank lines of spaces and tabs, no final newline
        "0 0 0 1\r\n1 2 3 4\r\n",  # CRLF
        "0 0 0 1\r\n\r\n1 2 3 4\r\n\r\n",
        "0 0 0 1\r1 2 3 4\r",  # CR
        "0 0 0 1\x0b1 2 3 4\x0c5 6 7 8",  # \v and \f break lines for str.splitlines()
        "0\t0\t0\t1\n1\t\t2 \t 3\t4\n",  # tabs
        "   0 0 0 1   \n\t1 2 3 4\t\n",  # leading and trailing whitespace
        "+1 -2 +3 +4.5\n-0 +0 -0 -0\n-0 0 0 -0.0\n",  # signs, -0
        "007 -0010 +000 00012.50\n",  # leading zeros
        "1 2 3 1e5\n4 5 6 1E-5\n7 8 9 -2.5e+3\n1 1 1 .5\n2 2 2 5.\n3 3 3 -.5e-3\n4 4 4 1.e5\n",
        "1 2 3 1e-320\n1 2 4 5e-324\n1 2 5 2.2250738585072014e-308\n1 2 6 1.7976931348623157e308\n",  # tiny/huge
        "1 2 3 123456789012345678901234567890\n1 2 4 0.1\n1 2 5 9007199254740993\n1 2 6 1e23\n",
        "1 2 3 0.000000000000000000000000000001\n1 2 4 1e00022\n1 2 5 1E+0005\n1 2 6 0e999\n",
        "1 2 3 1e000000000000000000005\n1 2 4 -2.5E-0000000000000000000003\n1 2 5 1e-00000000000000000000000400\n",
        "1 2 3 1e-10000000000000000000\n1 2 4 -0.0e+10000000000000000000\n",  # long exponents
        # 16-digit mantissas above 2**53: rounding them first, then scaling, would round twice
        "1 2 3 91399620.84340797\n1 2 4 944608837.2433843\n1 2 5 986.5452293525111\n1 2 6 9999999999999999e1\n",
        "2147483647 -2147483647 0 1\n",  # the largest indices allowed
        "0 0 0 1",  # one record, no newline
    ],
)
def test_valid_layouts(text, blocks):
    got = assert_same(text)
    assert got[0] == "ok"
    if blocks is None:
        assert fast(text) is not None, "the fast path should take this file"


def test_unusual_valid_file_goes_to_the_general_path():
    text = "000000000000000000000001 -00000000000000000000000000002 +0000000000000000003 4\n"  # 17+ digits
    assert fast(text) is None
    got = assert_same(text)
    assert got[0] == "ok" and got[1].tolist() == [[1, -2, 3]]


# ----------------------------------------------------------------------------- refused files


@pytest.mark.parametrize(
    "text, line",
    [
        ("0 0 0 1\n1.0 2 3 4\n", 2),  # '1.0' as an index
        ("0 0 0 1\n1 2e1 3 4\n", 2),  # '2e1' as an index
        ("0 0 0 1\n1 2 .3 4\n", 2),
        ("0 0 0 1\n1 2 3\n", 2),  # 3 columns
        ("0 0 0 1\n1 2 3 4 5\n", 2),  # 5 columns
        ("0 0 0 1\n1 2\n3 4\n", 2),  # a record on two lines
        ("0 0 0 1\r\n1 2 3\r\n4\r\n", 2),
        ("0 0 0 1\n1 2 3 1e999\n", 2),  # F not finite
        ("0 0 0 1\n1 2 3 -1e400\n", 2),
        ("0 0 0 1\n2147483648 0 0 1\n", 2),  # |index| = 2**31
        ("0 0 0 1\n0 -2147483648 0 1\n", 2),
        ("0 0 0 1\n0 0 99999999999999999999999 1\n", 2),
        ("0 0 0 1\n1 2 3 nan\n", 2),
        ("0 0 0 1\n1 2 3 inf\n", 2),
        ("0 0 0 1\n1_0 2 3 4\n", 2),
        ("0 0 0 1\n1 2 3 1_0\n", 2),
        ("0 0 0 1\n1 2 3 0x10\n", 2),
        ("0 0 0 1\n\u0661 0 0 2\n", 2),  # another script's digit
        # line breaks of str.splitlines() outside PLAIN_NUMERIC: every line looks right, and the file is
        # refused as a whole (no line), as before
        ("0 0 0 1\n1 2 3 4\u20285 6 7 8\n", None),
        ("0 0 0 1\n1 2 3 4\x1c5 6 7 8\n", None),
        ("0 0 0 1\n1 2 3 4\x855 6 7 8\n", None),
        ("0 0 0 1\n1 2 3 e5\n", 2),
        ("0 0 0 1\n1 2 3 1e\n", 2),
        ("0 0 0 1\n1 2 3 1e+\n", 2),
        ("0 0 0 1\n1 2 3 .\n", 2),
        ("0 0 0 1\n1 2 3 -.\n", 2),
        ("0 0 0 1\n1 2 3 .e5\n", 2),
        ("0 0 0 1\n1 2 3 1.2.3\n", 2),
        ("0 0 0 1\n1 2 3 1e5e5\n", 2),
        ("0 0 0 1\n1 2 3 1e5.5\n", 2),
        ("0 0 0 1\n1 2 3 --1\n", 2),
        ("0 0 0 1\n1 2 3 +-1\n", 2),
        ("0 0 0 1\n1 2 3 1-\n", 2),
        ("0 0 0 1\n1 2 3 1+1\n", 2),
        ("0 0 0 1\n- 2 3 4\n", 2),
        ("0 0 0 1\n+ 2 3 4\n", 2),
        ("0 0 0 1\n1- 2 3 4\n", 2),
        ("0 0 0 1\n1 2 3 4\n5 6", 3),
        ("1 2 3 4 5 6 7 8\n\n", 1),  # two records' worth on one line: as many line breaks as records
        ("0 0 0 1\n1 2 3 4 5 6 7 8\n\n", 2),
        ("\n\n1 2 3 4 5 6 7 8\n", 3),  # ... or more
        ("0 0 0 1\r\n1 2 3 4 5 6 7 8\r\n", 2),
        ("0 0 0 1\n1 2\n\n3 4\n\n", 2),
        ("0 0 0 1\n1 2 3 1e1e0000000000000000001\n", 2),
        ("0 0 0 1\n5 6\n7 8", 2),  # as many breaks as records, the last one inside a record
        ("0 0 0 1\n1 2 3 1e10000000000000000000\n", 2),
        ("0 0 0 1\n10000000000000000000005 0 0 1\n", 2),
    ],
)
def test_refused_files(text, line, blocks):
    got = assert_same(text)
    assert got[0] == "error" and got[2] == line, got
    assert fast(text) is None


# ----------------------------------------------------------------------------- numbers: as float()


def test_F_values_equal_float_of_each_token():
    """Many decimal spellings, the fast path vs ``float()``, bit for bit."""
    rng = random.Random(20240601)
    toks = []
    for _ in range(6000):
        v = rng.choice(
            [rng.uniform(0, 1000), 10 ** rng.uniform(-30, 30), rng.random() * 1e-300, float(rng.randrange(0, 2**60))]
        )
        form = rng.randrange(6)
        if form == 0:
            t = repr(v)
        elif form == 1:
            t = f"{v:.{rng.randrange(0, 20)}f}"[:40]
        elif form == 2:
            t = f"{v:.{rng.randrange(0, 20)}e}"
        elif form == 3:  # random digit strings, a point anywhere, maybe an exponent
            digits = "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 22)))
            p = rng.randrange(0, len(digits) + 1)
            t = digits[:p] + "." + digits[p:] if rng.random() < 0.7 else digits
            if t == ".":
                t = "0."
            if rng.random() < 0.4:
                exp = str(rng.randrange(0, 40)).zfill(rng.randrange(1, 4))
                t += rng.choice("eE") + rng.choice(["", "+", "-"]) + exp
        elif form == 4:  # halfway cases and near-2**53 integers
            t = str(2**53 + rng.randrange(-5, 6)) + rng.choice(["", ".0", ".5", "e0", "e-1"])
        else:
            t = f"{v:.17g}"
        toks.append(rng.choice(["", "+", "-"]) + t)
    text = "".join(f"{i % 7} {i % 11} {i % 13} {t}\n" for i, t in enumerate(toks))
    got = fast(text)
    assert got is not None
    want = np.array([float(t) for t in toks])
    assert np.array_equal(got[1].view(np.int64), want.view(np.int64))
    assert_same(text)


def test_indices_equal_int_of_each_token():
    rng = random.Random(7)
    rows = []
    for _ in range(3000):
        rows.append(
            [rng.choice(["", "+", "-"]) + "0" * rng.randrange(0, 3) + str(rng.randrange(0, 2**31)) for _ in range(3)]
        )
    text = "".join(f"{a} {b} {c} 1\n" for a, b, c in rows)
    got = fast(text)
    assert got is not None
    assert np.array_equal(got[0], np.array([[int(x) for x in r] for r in rows], dtype=np.int64))


# ----------------------------------------------------------------------------- randomized

GOOD_INDEX = ["0", "1", "-1", "+2", "-0", "007", "30", "-30", "2147483647", "-2147483647", "12345678901"[:9]]
BAD_INDEX = ["1.0", "1e3", "2147483648", "-2147483648", "1_0", "x", ".5", "+", "-", "1-", "--1", "0x1", "\u0661"]
GOOD_F = [
    "1",
    "0",
    "-0",
    "10.69",
    "179.21",
    ".5",
    "5.",
    "-.5e-3",
    "1e5",
    "1E-5",
    "+2.5e+3",
    "1e-320",
    "0.1",
    "123456789012345678901234567890",
    "9007199254740993",
    "4.35",
    "1e22",
    "1e23",
    "0e999",
    "1.e5",
]
BAD_F = [
    "1e999",
    "-1e999",
    "nan",
    "inf",
    "e5",
    "1e",
    "1e+",
    ".",
    "-.",
    "1.2.3",
    "1e5e5",
    "1e5.5",
    "1_0",
    "abc",
    "--1",
    "1-",
    "0x10",
]
SEP = [" ", " ", " ", "\t", "  ", " \t "]
NEWLINE = ["\n", "\n", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"]


def _random_line(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.08:
        return rng.choice(["", " ", "\t", "  \t "])  # blank
    n_cols = 4 if r < 0.85 else rng.choice([1, 2, 3, 5, 6])
    cols = []
    for c in range(n_cols):
        bad = rng.random() < 0.04
        if c < 3:
            cols.append(rng.choice(BAD_INDEX if bad else GOOD_INDEX))
        else:
            cols.append(rng.choice(BAD_F if bad else GOOD_F))
    line = "".join(tok + rng.choice(SEP) for tok in cols[:-1]) + cols[-1]
    if rng.random() < 0.1:
        line = rng.choice(SEP) + line
    if rng.random() < 0.1:
        line += rng.choice(SEP)
    return line


def test_fuzz_small_files(monkeypatch):
    rng = random.Random(12345)
    counts = {"ok": 0, "error": 0, "fast": 0}
    for _ in range(400):
        monkeypatch.setattr(H, "_BLOCK", rng.choice([1 << 16, 1, 7, 40]))  # blocks of a few lines, too
        lines = [_random_line(rng) for _ in range(rng.randrange(1, 12))]
        # mostly '\n', sometimes another break
        text = "".join(ln + (rng.choice(NEWLINE) if rng.random() < 0.3 else "\n") for ln in lines)
        if rng.random() < 0.3:
            text = text.rstrip("\n")
        if not text.strip():
            continue
        got = assert_same(text)
        counts[got[0]] += 1
        counts["fast"] += fast(text) is not None
    # the fuzz reaches both outcomes and the fast path
    assert counts["ok"] > 50 and counts["error"] > 50 and counts["fast"] > 50, counts


def test_fuzz_files_of_valid_lines(monkeypatch):
    """Longer files of valid lines with one bad line somewhere: the same first bad line is reported."""
    rng = random.Random(99)
    for i in range(60):
        monkeypatch.setattr(H, "_BLOCK", rng.choice([1 << 16, 64, 200]))
        lines = []
        for _ in range(rng.randrange(20, 80)):
            lines.append(" ".join([rng.choice(GOOD_INDEX) for _ in range(3)] + [rng.choice(GOOD_F)]))
        if i % 2:
            k = rng.randrange(len(lines))
            bad = rng.choice(
                [
                    "1 2 3",
                    "1 2 3 4 5",
                    "1.0 2 3 4",
                    "1 2 3 1e999",
                    "1 2 3 nan",
                    "2147483648 1 1 1",
                    "1 2 3 1e5.5",
                    "1 2 3 \u0661",
                ]
            )
            lines[k] = bad
        text = "\n".join(lines) + "\n"
        got = assert_same(text)
        assert got[0] == ("error" if i % 2 else "ok")


def test_fuzz_token_grammar():
    """Random strings of PLAIN_NUMERIC's token characters as F and as an index: accepted, refused and
    read exactly as before."""
    rng = random.Random(2024)
    alphabet = "0123456789" * 3 + "+-.eE"
    accepted = 0
    for i in range(3000):
        tok = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 7)))
        text = f"1 2 3 4\n0 0 0 {tok}\n" if i % 3 else f"1 2 3 4\n{tok} 0 0 1\n"
        got = assert_same(text)
        accepted += got[0] == "ok"
        assert (got[0] == "ok") == (fast(text) is not None)  # the fast path takes every valid one here
    assert 300 < accepted < 2700
