"""Log parsing: any chunking gives the same lines; \\r redraws, ANSI, restarts from an offset."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from log_parsers import GenericParser, LineAssembler, RegexParser

LOG = (b"start\n"
       b"Epoch 1/2:  50%|##   | loss=0.90\rEpoch 1/2: 100%|#####| loss=0.50\r"
       b"Epoch 2/2:  50%|##   | loss=0.40\r\x1b[32mEpoch 2/2: 100%|#####| loss=0.30\x1b[0m\n"
       b"val_acc: 0.75 lr=1e-3\r\n"
       b"caf\xc3\xa9 done\n")
EXPECTED = ["start", "Epoch 1/2: 100%|#####| loss=0.50", "Epoch 2/2: 100%|#####| loss=0.30", "val_acc: 0.75 lr=1e-3", "café done"]


def feed_all(data: bytes, cuts) -> list[str]:
    a = LineAssembler()
    out, prev = [], 0
    for c in sorted(set(cuts)) + [len(data)]:
        out += a.feed(data[prev:c])
        prev = c
    return out + a.finish()


def test_redraws_ansi_and_epoch_change():
    # the last redraw of epoch 1 is kept although epoch 2's bar overwrote it without a newline
    assert feed_all(LOG, []) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, len(LOG)), max_size=12))
def test_any_chunking_gives_the_same_lines(cuts):
    assert feed_all(LOG, cuts) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(LOG)))
def test_restart_from_consumed_offset_neither_repeats_nor_skips(cut):
    a = LineAssembler()
    first = a.feed(LOG[:cut])
    b = LineAssembler(a.consumed)
    rest = b.feed(LOG[a.consumed:]) + b.finish()
    assert first + rest == EXPECTED


def test_partial_line_waits_for_its_end():
    a = LineAssembler()
    assert a.feed(b"loss=0.") == []
    assert a.feed(b"5\n") == ["loss=0.5"]


def test_generic_parser_styles():
    p = GenericParser()
    assert p.feed_line("Epoch 3/10") == []
    assert p.feed_line("train_loss: 0.25, Val-Acc: 97.5%  lr=1e-4 step=7") == [
        ("train_loss", 0.25, 7, 3), ("val_acc", 97.5, 7, 3), ("lr", 0.0001, 7, 3)]
    assert p.feed_line("12:30:45 started at 2026-01-01") == []
    assert p.state() == {"epoch": 3, "step": 7}
    q = GenericParser(p.state())
    assert q.feed_line("acc=1") == [("acc", 1.0, 7, 3)]


def _plain_generic(lines):
    """The generic parser written plainly (every pattern on every line, every name normalised
    each time): what the fast one must give, line for line."""
    from log_parsers.generic import _EPOCH, _KV, _SKIP_KEYS, _STEP, _norm

    epoch = step = None
    out = []
    for line in lines:
        if "=" not in line and ":" not in line and "poch" not in line:
            out.append([])
            continue
        m = _EPOCH.search(line)
        epoch = int(m.group(1)) if m else epoch
        m = _STEP.search(line)
        step = int(m.group(1)) if m else step
        out.append([(_norm(n), float(v), step, epoch) for n, v in _KV.findall(line) if _norm(n) not in _SKIP_KEYS])
    return out


# words a log prints, with the letters that Unicode folds onto ASCII ones under IGNORECASE
# (long s, dotless i, dotted I, Kelvin sign): a line holding them must still set its step
_WORDS = ["Epoch", "epoch", "EPOCH", "step", "Step", "iter", "it", "ſtep", "İt", "ıter", "loss", "Val-Acc", "lr",
          "train loss", "kelvin", "=", ": ", " ", "/", "3", "0.5", "1e-4", "nan", "%", "[", "(", "42"]


@settings(max_examples=400, deadline=None)
@example(["ſtep=3 loss=1", "İt: 4 acc=2", "Epoch 2 ıter=5 lr=1e-4", "EPOCH=7 it=8 Val-Acc: 0.5"])
@example(["Step 5 loss=1", "ITER: 9 acc=2", "EPOCH [3/10] It=4 lr=0.1", "loss=2 STEP=6", "ePoCh: 8"])  # ASCII, any case
@given(st.lists(st.lists(st.sampled_from(_WORDS), max_size=12).map("".join), max_size=8))
def test_generic_parser_gives_what_the_plain_one_gives(lines):
    p = GenericParser()
    assert repr([p.feed_line(line) for line in lines]) == repr(_plain_generic(lines))  # (repr: nan is not == nan)


def _through_c(lines, state):
    """(the points, the state after) of the C loop (log_parsers._generic_c) over lines, as feed_lines gives them."""
    from array import array

    from log_parsers.generic import columns

    p = GenericParser(state)
    got = columns(p, list(lines))
    if got is None:
        return None, p.state()
    keys, n, k, v, s, e = got
    k, v, s, e = (array(c, b).tolist() for c, b in zip("Idqq", (k, v, s, e)))
    assert len(k) == n
    return [(keys[i], v[j], None if s[j] < 0 else s[j], None if e[j] < 0 else e[j]) for j, i in enumerate(k)], p.state()


# characters and pieces the C loop decides on: word and name characters, every \s of ASCII (\x1c-\x1f
# among them), the separators, signs, dots, exponents, nan/inf spellings, brackets, long digit runs
_PIECES = ["epoch", "Epoch", "EPOCH", "poch", "step", "STEP", "iter", "it", "It", "ite", "steps", "loss", "val-acc", "a/b", "x.y",
           "_", "=", ":", ": ", " ", "  ", "\t", "\x1c", "\x1f", "\x0b", "         ", "/", ".", "-", "+", "[", "(", "]", "e", "E",
           "e+", "e-", "0", "7", "42", "3.", ".5", "1e5", "nan", "NaN", "nAn", "inf", "Inf", "INF", "infinity", "%", ",",
           "1" * 18, "9" * 19, "1" * 400, "n" * 70, "é", "ſtep", "İt"]


@settings(max_examples=1500, deadline=None)
@example(["step=1 loss=0.5 lr=0.001 acc=0.12", "Epoch 3/10 loss: 1e-3 val_acc = .5", "it 5 x=nan y=-inf z=Inf w=1.5.5"],
         {"step": None, "epoch": None})
@example(["step " + "9" * 19 + " loss=1", "epoch=" + "1" * 400 + " step=3 acc=2", "loss=2"], {"step": 4, "epoch": 1})
@example(["a" + " " * 8 + "=1 b" + " " * 9 + "=2 c=" + " " * 8 + "3 d=" + " " * 9 + "4", "e:" + " " * 9 + "5 f:" + " " * 10 + "6 g:7",
          "k=5: l=5/ m=5. n=5a o=nan: p=inf/ q=-.5e+3 r=1e s=+x t=1.5e3x u=7", "g:x5 h:-1 i:=2 j::3",
          "1.a=5 _.b=6 -c=7 /d=8 9e=1"], {"step": None, "epoch": None})
@example(["é epoch 3 loss=1", "ſtep=3 x=1", "a" * 64 + "=1 " + "b" * 65 + "=2", "k:\x1c5 k= \x1f+.5e-3 k:5"], {"step": None, "epoch": 2})
@given(st.lists(st.lists(st.sampled_from(_PIECES), max_size=14).map("".join), max_size=8),
       st.sampled_from([{"step": None, "epoch": None}, {"step": 5, "epoch": None}, {"step": 3, "epoch": 9}]))
def test_the_c_loop_gives_what_the_parser_gives(lines, state):
    """log_parsers/_generic_c.c matches lines by hand as generic.py's patterns do: on any lines (ASCII
    or not, positions too long for int64, names past 64 characters, every ASCII space) it gives the
    points and the state that feed_line gives them, or declines (None) and leaves the state as it was."""
    import pytest

    from log_parsers.generic import _generic_c
    from log_parsers.regex import feed_lines

    if _generic_c is None:
        pytest.skip("the C loop is not built here (no C compiler or Python headers when installed)")
    p = GenericParser(state)
    names, vals, steps, epochs = feed_lines(p, lines)
    got, after = _through_c(lines, state)
    if got is None:  # declined: a position past int64 (a line of 19 digits or more set it)
        assert after == state and any(len(str(x)) >= 19 for x in (*steps, *epochs, p.step, p.epoch) if x is not None)
        return
    assert repr(got) == repr(list(zip(names, vals, steps, epochs))) and after == p.state()  # (repr: nan is not == nan)


def test_the_c_loop_is_built_where_it_can_be():
    """Where a C compiler and Python's headers are (as in CI, which installs them), the install
    builds the C loop: a build that failed in silence would leave every log parsed ~10x slower."""
    import os
    import shutil
    import sysconfig

    import pytest

    from log_parsers.generic import _generic_c

    if not shutil.which("cc") or not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        pytest.skip("no C compiler or no Python.h here: the generic parser runs in Python")
    assert _generic_c is not None, "setup.py did not build log_parsers/_generic_c.c: run scripts/setup.sh (pip install -e .)"


def test_regex_parser_named_groups_and_ignore():
    p = RegexParser({"patterns": [r"^\s*(?P<epoch>\d+)/\d+\s+(?P<box_loss>[\d.]+)\s+(?P<cls_loss>[\d.]+)",
                                  {"regex": r"all\s+\d+\s+\d+\s+(?P<precision>[\d.]+)\s+(?P<recall>[\d.]+)", "prefix": "val_"}],
                     "ignore": [r"^Validating best"], "epoch_offset": 1})
    assert p.feed_line("  0/2   1.5  2.5") == [("box_loss", 1.5, None, 1), ("cls_loss", 2.5, None, 1)]
    assert p.feed_line("   all   8   12   0.5  0.25") == [("val_precision", 0.5, None, 1), ("val_recall", 0.25, None, 1)]
    assert p.feed_line("Validating best.pt all 8 12 0.9 0.9") == []


def test_results_file_comparison_finds_disagreements():
    from log_parsers.results import compare

    results = {1: {"acc": 0.4, "loss": 1.0}, 2: {"acc": 0.5, "loss": 0.8}}
    parsed = {1: {"val_acc": 0.4, "train_loss": 1.0}, 2: {"val_acc": 0.5001, "train_loss": 0.8}}
    assert compare(results, parsed, {"acc": "val_acc", "loss": "train_loss"}) == (4, [])  # within the printed precision
    n, bad = compare(results, {**parsed, 2: {"val_acc": 0.55, "train_loss": 0.8}}, {"acc": "val_acc", "loss": "train_loss"})
    assert n == 4 and bad == ["epoch 2: acc=0.5 in the results file, val_acc=0.55 in the log"]
    n, bad = compare({**results, 3: {"acc": 0.6}}, parsed, {"acc": "val_acc"})
    assert bad == ["epoch 3: in the results file, not in the log"]


def test_one_ansi_stripper_for_bytes_and_text():
    """The parser, `runner logs` and the dashboard take escape sequences out with one pattern:
    colours, cursor moves, a window title, character-set selections, keypad modes."""
    from log_parsers.stream import strip_ansi

    raw = "\x1b[32mepoch 1\x1b[0m \x1b[2K\x1b[1A\x1b]0;title\x07loss \x1b(Bok\x1b=\x1b>\x1bM done"
    assert strip_ansi(raw) == "epoch 1 loss ok done"
    assert strip_ansi(raw.encode()) == b"epoch 1 loss ok done"



_BYTES = [b"a", b"loss=0.5", b" ", b"\t", b"\n", b"\n\n", b"\xc3\xa9", b"\xc3", b"\xe2\x82", b"\xff", b"\xc2\x85", b"\xe2\x80\xa8",
          b"\x0b", b"\x1c", b"0123456789", b"x" * 30]


class _LineByLine(LineAssembler):
    def _plain(self, buf):
        return False  # every chunk the line-by-line way


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_BYTES), max_size=40).map(b"".join), st.lists(st.integers(0, 400), max_size=6))
def test_plain_chunks_give_the_lines_the_line_by_line_way_gives(data, cuts):
    """A chunk of plain lines (no \\r, no escape) is decoded at once, not line by line: the same
    lines, whatever the bytes (a sequence cut by a newline, Unicode spaces that rstrip takes, lines
    longer than MAX_LINE) and the chunking, with the same offsets."""
    from log_parsers import stream

    real, stream.MAX_LINE = stream.MAX_LINE, 24  # lines past it come often
    try:
        fast, slow = LineAssembler(), _LineByLine()
        cuts = sorted(set(x for x in cuts if x <= len(data))) + [len(data)]
        prev = 0
        for c in cuts:
            assert fast.feed(data[prev:c]) == slow.feed(data[prev:c])
            assert fast.consumed == slow.consumed
            prev = c
        assert fast.finish() == slow.finish()
    finally:
        stream.MAX_LINE = real


def test_a_line_of_spaces_after_a_position_word_costs_linear_time():
    """`epoch` (or `step`), 16,000 spaces and no digit, in a line that is not ASCII (so Python's
    patterns, not the C loop, see it): each took 1.8 s in a helper (found by a hostile pass: a job
    printing 30 of them held its helper at full CPU 55 s); the spaces are possessive now."""
    import time

    from log_parsers.regex import feed_lines

    lines = ["epoch" + " " * 16000 + "é loss=1", "step" + " " * 16000 + "é acc=2", "Epoch" + "\t" * 16000 + "x=3 é"] * 10
    t0 = time.process_time()
    names, vals, _, _ = feed_lines(GenericParser(), lines)
    assert time.process_time() - t0 < 3.0 and names == ["loss", "acc", "x"] * 10 and vals == [1.0, 2.0, 3.0] * 10
