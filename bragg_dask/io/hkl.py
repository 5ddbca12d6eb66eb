"""HKL text files: one reflection per line, ``h k l F`` with integer indices.

The C program reads the file as a stream of 4-number records; a malformed file silently misreads.
Here a malformed line is an error naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from bragg_dask.errors import InputFileError
from bragg_dask.io.textfile import PLAIN_NUMERIC, parse_integer, parse_number, read_text
from bragg_dask.physics.constants import C_INT_MAX
from bragg_dask.physics.structure_factors import StructureFactors

MAX_TABLE = 2**28  # structure-factor table entries (2 GiB of float64)


def read_hkl(path: str | Path, default_F: float = 0.0) -> StructureFactors:
    """Read an HKL file into a :class:`StructureFactors` table (missing entries -> ``default_F``)."""
    path = Path(path)
    text = read_text(str(path))
    hkl, F = _parse_records(text, str(path))
    if len(F) == 0:
        raise InputFileError(str(path), None, "no reflections (expected lines of 'h k l F')")
    lo = np.array([hkl[:, i].min() for i in range(3)])  # column by column: 15x faster than axis=0
    hi = np.array([hkl[:, i].max() for i in range(3)])
    shape = tuple(int(x) for x in (hi - lo + 1))
    if np.prod(np.asarray(shape, dtype=np.float64)) > MAX_TABLE:
        span = hi - lo
        axis = int(np.argmax(span))
        far = np.abs(hkl[:, axis]).argmax()
        raise InputFileError(
            str(path),
            _record_line(text, int(far)),
            f"Miller indices span {shape[0]} x {shape[1]} x {shape[2]}: too large a table "
            f"(index {int(hkl[far, axis])} is out of any sensible range)",
        )
    table = np.full(shape, float(default_F), dtype=np.float64)
    idx = hkl
    idx -= lo  # in place: hkl is ours
    table[idx[:, 0], idx[:, 1], idx[:, 2]] = F  # duplicates: the last one wins, as in C
    return StructureFactors(
        default_F=float(default_F),
        values=table,
        hkl_min=(int(lo[0]), int(lo[1]), int(lo[2])),
        n_records=int(len(F)),
        source=str(path),
    )


def _record_line(text: str, k: int) -> int:
    """1-based line number of the ``k``-th non-blank line."""
    seen = -1
    for no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            seen += 1
            if seen == k:
                return no
    return 1


def _parse_records(text: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(hkl, F)`` of every record; an :class:`InputFileError` naming the first bad line otherwise.

    A vectorised byte-level parse takes the common file (ASCII, short numbers); anything it does not
    vouch for goes to the general path, which accepts and refuses exactly the same files."""
    fast = _parse_plain(text)
    if fast is not None:
        return fast
    return _parse_records_general(text, name)


def _parse_records_general(text: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised parse; on any problem, a line-by-line scan finds the line to report."""
    lines = text.splitlines()
    tokens = text.split()
    if PLAIN_NUMERIC.fullmatch(text) and all(len(ln.split()) == 4 for ln in lines if ln.strip()):
        try:
            arr = np.array(tokens, dtype=object).reshape(-1, 4)
            hkl = arr[:, :3].astype(np.int64)
            F = arr[:, 3].astype(np.float64)
            if np.isfinite(F).all() and (np.abs(hkl) <= C_INT_MAX).all():
                return hkl, F
        except (ValueError, OverflowError):
            pass
    _raise_first_bad_line(lines, name)
    raise AssertionError("unreachable")  # pragma: no cover


# the fast path's byte classes; 0: a byte PLAIN_NUMERIC refuses (-> the general path)
_WS, _BREAK, _DIGIT, _SIGN, _POINT, _EXP = 1, 2, 3, 4, 5, 6
_classes = bytearray(256)
for _chars, _cls in (
    (" \t", _WS),
    ("\n\r\v\f", _BREAK),
    ("0123456789", _DIGIT),
    ("+-", _SIGN),
    (".", _POINT),
    ("eE", _EXP),
):
    for _c in _chars:
        _classes[ord(_c)] = _cls  # the line breaks: those of str.splitlines() among PLAIN_NUMERIC's bytes
_CLASS = bytes(_classes)
del _classes, _chars, _cls, _c


def _special_ok(before: int, kind: int, after: int) -> bool:
    """May a sign/point/'e' (``kind``) stand between bytes of classes ``before`` and ``after``?
    With at most one point and one 'e' per token, the point first, these rules are DECIMAL and INTEGER
    (points and 'e's are only allowed in F, which the caller checks)."""
    blank = before in (_WS, _BREAK)
    if kind == _SIGN:  # opens a token, or follows the 'e'; then a digit (or the mantissa's point)
        return (blank and after in (_DIGIT, _POINT)) or (before == _EXP and after == _DIGIT)
    if kind == _POINT:  # inside a mantissa, next to at least one of its digits
        return (
            before in (_WS, _BREAK, _SIGN, _DIGIT)
            and after in (_WS, _BREAK, _DIGIT, _EXP)
            and _DIGIT in (before, after)
        )
    return before in (_DIGIT, _POINT) and after in (_SIGN, _DIGIT)  # 'e': after the mantissa


_SPECIAL_OK = np.array([_special_ok(i >> 6, (i >> 3) & 7, i & 7) for i in range(512)], dtype=bool)
_PAD = 16  # blanks before the text: no token at the edges, and 16 bytes before any digit run
_BLANKS = " " * _PAD
_BLOCK = 1 << 16  # characters of text parsed at a time
_MAX_DIGITS = 16  # the longest digit run read in two 8-byte words
_POW10_INT = 10 ** np.arange(_MAX_DIGITS + 1, dtype=np.int64)
_POW10_FLOAT = 10.0 ** np.arange(23)  # the exact powers of ten in float64: 1e0 .. 1e22
_MAX_EXACT = 2**53
_SIGN_LENGTH = np.zeros(256, dtype=np.int64)  # by a token's first byte
_SIGN_LENGTH[[ord("+"), ord("-")]] = 1
_SIGN_INT = np.ones(256, dtype=np.int64)
_SIGN_INT[ord("-")] = -1
_SIGN_FLOAT = _SIGN_INT.astype(np.float64)  # 0 * -1.0 = -0.0, as float('-0')
# 8 bytes read as a little-endian word: which of them the last n (0..8) are, and their '0's
_KEEP = np.array([~((1 << (8 * (8 - n))) - 1) & (2**64 - 1) for n in range(9)], dtype=np.uint64)
_ZEROS = _KEEP & np.uint64(0x3030303030303030)
_LANES = np.uint64(0x000000FF000000FF)
_MUL1 = np.uint64(100 + (1000000 << 32))
_MUL2 = np.uint64(1 + (10000 << 32))


def _eight_digits(words: np.ndarray, hi: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Value of the ``n`` (0..8) digits before position ``hi`` (``words[p]``: the 8 bytes from ``p``),
    by the SWAR reduction of fast_float's ``parse_eight_digits_unrolled``."""
    w = words[hi - 8]
    w &= _KEEP[n]
    w -= _ZEROS[n]  # digit values; the bytes before the run are 0
    shifted = w >> np.uint64(8)
    w *= np.uint64(10)
    w += shifted
    hi_lanes = w >> np.uint64(16)
    hi_lanes &= _LANES
    hi_lanes *= _MUL2
    w &= _LANES
    w *= _MUL1
    w += hi_lanes
    w >>= np.uint64(32)
    return w


def _digit_runs(words: np.ndarray, hi: np.ndarray, n: np.ndarray, width: int) -> np.ndarray:
    """Integer value (int64) of each run of ``n <= width <= 16`` digits ending before ``hi`` (0 when empty)."""
    if width == 0:
        return np.zeros(hi.shape, dtype=np.int64)
    if width <= 8:
        return _eight_digits(words, hi, n).view(np.int64)
    value = _eight_digits(words, hi - 8, np.clip(n - 8, 0, 8))
    value *= np.uint64(100000000)
    value += _eight_digits(words, hi, np.minimum(n, 8))
    return value.view(np.int64)


def _parse_plain(text: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The records of a well-formed file of plain ASCII numbers, or ``None`` (unusual or malformed text:
    the general path decides).

    Checks, on the bytes: only PLAIN_NUMERIC characters; each non-blank line holds 4 tokens; the first
    three match INTEGER and the fourth DECIMAL; |index| <= C_INT_MAX; F finite.  Values equal Python's
    ``int()``/``float()`` of each token: integers are summed exactly, and a decimal ``m * 10**e`` with
    ``m <= 2**53``, ``|e| <= 22`` is one correctly rounded product or quotient of exact doubles (Clinger's
    fast path); any other F token is read with ``float()``.

    The text goes in blocks of whole lines (~64 kB): their scratch arrays stay in the cache and in the
    allocator's free memory, where one pass over a 2 MB text faults in tens of MB of fresh pages (which
    cost more than the parse itself)."""
    end = len(text)
    most = (end + 1) // 8  # records: 7 characters and a line break each, at least
    hkl = np.empty((most, 3), dtype=np.int64)
    F = np.empty(most, dtype=np.float64)
    n = 0
    start = 0
    while start < end:
        stop = text.find("\n", start + _BLOCK) + 1 if start + _BLOCK < end else end
        if stop == 0:  # no '\n' after start + _BLOCK
            stop = end
        try:
            raw = (_BLANKS + text[start:stop] + " ").encode("ascii")
        except UnicodeEncodeError:
            return None
        block = _parse_block(raw)
        if block is None or n + len(block[1]) > most:
            return None
        hkl[n : n + len(block[1])] = block[0]
        F[n : n + len(block[1])] = block[1]
        n += len(block[1])
        start = stop
    return (hkl[:n], F[:n]) if n else None


class _Marks(NamedTuple):
    """Where the points and 'e's of the F tokens stand: their positions (sorted) and which tokens hold
    one (``True``: every one, ``False``: none, else a bool per record)."""

    point_at: np.ndarray
    has_point: np.ndarray | bool
    exp_at: np.ndarray
    has_exp: np.ndarray | bool


def _parse_block(raw: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """`_parse_plain` of whole lines, ``raw``: ASCII bytes after ``_PAD`` blanks and before one."""
    byte = np.frombuffer(raw, dtype=np.uint8)
    cls = np.frombuffer(raw.translate(_CLASS), dtype=np.uint8)
    if not cls.all():
        return None
    rec = _records(cls)
    if rec is None:
        return None
    if len(rec) == 0:  # blank lines only
        return np.empty((0, 3), dtype=np.int64), np.empty(0, dtype=np.float64)
    marks = _marks(cls, rec)
    if marks is None:
        return None
    words = np.ndarray((len(raw) - 7,), dtype="<u8", buffer=raw, strides=(1,))  # words[p]: the 8 bytes from p
    hkl = _miller_indices(byte, words, rec)
    if hkl is None:
        return None
    F = _structure_factor_values(raw, byte, words, rec, marks)
    if F is None:
        return None
    return hkl, F


def _records(cls: np.ndarray) -> np.ndarray | None:
    """Token edges of a block, ``(records, 8)``: (start, end) of each record's 4 tokens (runs of non-blank
    bytes); ``None`` unless the tokens make whole records, one to a line."""
    in_token = cls >= _DIGIT
    change = np.empty(len(cls), dtype=bool)
    change[0] = False
    np.not_equal(in_token[1:], in_token[:-1], out=change[1:])
    edges = np.flatnonzero(change)
    if len(edges) % 8:
        return None
    rec = edges.reshape(-1, 8)
    if len(rec) and not _one_record_per_line(cls, rec):
        return None
    return rec


def _marks(cls: np.ndarray, rec: np.ndarray) -> _Marks | None:
    """Signs, points and 'e's: each where it may stand, and points and 'e's one at most per F token
    (``None`` otherwise)."""
    special = np.flatnonzero(cls >= _SIGN)
    kind = cls[special]
    code = cls[special - 1].astype(np.uint16)
    code <<= 6
    code |= kind << 3
    code |= cls[special + 1]
    if not _SPECIAL_OK[code].all():
        return None
    s3 = rec[:, 6]
    e3 = rec[:, 7]
    exp_at = special[kind == _EXP]
    point_at = special[kind == _POINT]
    has_exp = _one_per_token(exp_at, s3, e3)
    has_point = _one_per_token(point_at, s3, e3)
    if has_exp is None or has_point is None:
        return None
    return _Marks(point_at, has_point, exp_at, has_exp)


def _miller_indices(byte: np.ndarray, words: np.ndarray, rec: np.ndarray) -> np.ndarray | None:
    """``(records, 3)`` int64 h, k, l of tokens ``[+-]?digits``; ``None`` when one is too long for the fast
    path or out of range (|index| > C_INT_MAX)."""
    s_i = rec[:, 0:6:2].ravel()  # h k l h k l ...
    e_i = rec[:, 1:6:2].ravel()
    lead = byte[s_i]  # a sign or a digit
    n_i = e_i - s_i
    n_i -= _SIGN_LENGTH[lead]
    width = int(n_i.max())
    if width > _MAX_DIGITS:
        return None
    hkl = _digit_runs(words, e_i, n_i, width)
    if hkl.max() > C_INT_MAX:
        return None
    hkl *= _SIGN_INT[lead]
    return hkl.reshape(-1, 3)


def _structure_factor_values(
    raw: bytes, byte: np.ndarray, words: np.ndarray, rec: np.ndarray, marks: _Marks
) -> np.ndarray | None:
    """F of each record, tokens ``[+-] int-digits [. frac-digits] [e [+-] exp-digits]``, as ``float()``
    reads them; ``None`` when one is not finite (or holds a point in its exponent)."""
    s3 = rec[:, 6]
    e3 = rec[:, 7]
    lead = byte[s3]
    mant_end, exponent, slow = _exponents(byte, words, e3, marks)
    point, n_frac = _fraction_digits(mant_end, marks)
    if (n_frac < 0).any():
        return None  # a point in the exponent
    mant, slow = _mantissas(words, s3, lead, point, n_frac, mant_end, marks.has_point is not False, slow)
    F = mant.astype(np.float64)
    if exponent is None:  # 10**-n_frac: 0..16 places
        F /= _POW10_FLOAT[n_frac]
    else:
        exponent -= n_frac
        far = np.abs(exponent) > 22
        slow |= far
        scale = _POW10_FLOAT[np.minimum(np.abs(exponent), 22)]
        F = np.where(exponent >= 0, F * scale, F / scale)
    F *= _SIGN_FLOAT[lead]
    if slow is not None:  # beyond the exact fast path: Python's float() of the token
        for k in np.flatnonzero(slow).tolist():
            F[k] = float(raw[s3[k] : e3[k]])
    if not np.isfinite(F).all():
        return None
    return F


def _exponents(
    byte: np.ndarray, words: np.ndarray, e3: np.ndarray, marks: _Marks
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(mant_end, exponent, slow)``: where each F's mantissa ends, its decimal exponent (``None``: no 'e'
    in any F) and the records whose exponent has more than 4 digits (``None``: no 'e')."""
    has_exp, exp_at = marks.has_exp, marks.exp_at
    if has_exp is False:
        return e3, None, None
    n_rec = len(e3)
    if has_exp is True:
        has_exp = np.ones(n_rec, dtype=bool)
    mant_end = e3.copy()
    mant_end[has_exp] = exp_at
    x_lo = exp_at + 1
    x_sign = _SIGN_INT[byte[x_lo]]
    x_lo += _SIGN_LENGTH[byte[x_lo]]
    x_hi = e3[has_exp]
    n_x = x_hi - x_lo
    too_long = n_x > 4
    slow = np.zeros(n_rec, dtype=bool)
    slow[has_exp] = too_long
    n_x[too_long] = 0
    x = _digit_runs(words, x_hi, n_x, int(n_x.max()))
    x *= x_sign
    exponent = np.zeros(n_rec, dtype=np.int64)
    exponent[has_exp] = x
    return mant_end, exponent, slow


def _fraction_digits(mant_end: np.ndarray, marks: _Marks) -> tuple[np.ndarray, np.ndarray]:
    """``(point, n_frac)``: where each mantissa's point stands (its end when it has none) and the digits
    after it (negative: a point after the mantissa, in the exponent)."""
    has_point = marks.has_point
    if has_point is True:  # the usual: a point in each F
        point = marks.point_at
        n_frac = mant_end - point
        n_frac -= 1
    elif has_point is False:
        point = mant_end
        n_frac = np.zeros(len(mant_end), dtype=np.int64)
    else:
        point = mant_end.copy()
        point[has_point] = marks.point_at
        n_frac = mant_end - point
        n_frac -= has_point
    return point, n_frac


def _mantissas(
    words: np.ndarray,
    s3: np.ndarray,
    lead: np.ndarray,
    point: np.ndarray,
    n_frac: np.ndarray,
    mant_end: np.ndarray,
    any_point: bool,
    slow: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(mant, slow)``: each F's digits, point dropped, as an int64, and ``slow`` with the records added
    whose mantissa is too long (> 16 digits: their ``n_frac`` is set to 0 in place) or not exact in a
    double (> 2**53)."""
    n_int = point - s3
    n_int -= _SIGN_LENGTH[lead]
    n_digits = n_int + n_frac
    most = int(n_digits.max())
    if most > _MAX_DIGITS:
        too_long = n_digits > _MAX_DIGITS
        slow = too_long if slow is None else slow | too_long
        n_int[too_long] = 0
        n_frac[too_long] = 0
    mant = _digit_runs(words, point, n_int, int(n_int.max()))
    if any_point:
        mant *= _POW10_INT[n_frac]
        mant += _digit_runs(words, mant_end, n_frac, int(n_frac.max()))
    if most > 15:  # may exceed 2**53
        inexact = mant > _MAX_EXACT
        slow = inexact if slow is None else slow | inexact
    return mant, slow


def _one_record_per_line(cls: np.ndarray, rec: np.ndarray) -> bool:
    """Are the records (``rec``: token edges, 4 tokens a row) one to a line: a line break after each
    record but the last, and none inside one?"""
    breaks = np.flatnonzero(cls == _BREAK)
    n = len(rec)
    if len(breaks) in (n - 1, n):  # the common layout: one break after each record (the last: maybe)
        between = breaks[: n - 1]
        if (
            (between >= rec[:-1, 7]).all()
            and (between < rec[1:, 0]).all()
            and (len(breaks) == n - 1 or breaks[-1] >= rec[-1, 7])
        ):
            return True
    r = np.searchsorted(rec[:, 0], breaks, side="right") - 1  # the record a break follows the start of
    after = r >= 0
    r = r[after]
    if (breaks[after] < rec[r, 7]).any():
        return False  # a break inside a record
    followed = np.zeros(n, dtype=bool)
    followed[r] = True
    return bool(followed[:-1].all())


def _one_per_token(pos: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray | bool | None:
    """Which tokens ``[start[i], end[i])`` hold one of the (sorted) positions ``pos`` (``True``: all,
    ``False``: none); ``None`` when a position lies outside every token or two share one."""
    if len(pos) == 0:
        return False
    if len(pos) == len(start) and (pos >= start).all() and (pos < end).all():
        return True  # one in each
    k = np.searchsorted(start, pos, side="right") - 1
    if k[0] < 0 or (pos >= end[k]).any() or (np.diff(k) <= 0).any():
        return None
    has = np.zeros(len(start), dtype=bool)
    has[k] = True
    return has


def _raise_first_bad_line(lines: list[str], name: str) -> None:
    """Raise the :class:`InputFileError` of the first line that is not a record (file and line named)."""
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
            if abs(h) > C_INT_MAX:
                raise InputFileError(name, no, f"Miller index {tok!r} is out of range")
        try:
            f = parse_number(parts[3])
        except ValueError:
            raise InputFileError(name, no, f"structure factor {parts[3]!r} is not a number") from None
        if not np.isfinite(f):
            raise InputFileError(name, no, f"structure factor {parts[3]!r} is not finite")
    raise InputFileError(name, None, "unreadable HKL file")
