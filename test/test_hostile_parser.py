"""Regression tests for what fuzzing (fuzz/fuzz_parser.py) found in MSRPParser.

Each test is named after what it guards.  The invariant behind them: the
same bytes give the same events or the same error whatever way they are
cut, and a limit counts what its documentation says (bytes).
"""

import pytest

from msrplib.protocol import MSRPParser, LimitExceeded

# every test runs with the parser's C fast path and without it (test/conftest.py)
pytestmark = pytest.mark.usefixtures('parser_implementation')

LIMITS = dict(max_line_length=300, max_headers=12, max_header_block=1200)


def outcome(data, cuts):
    parser = MSRPParser(**LIMITS)
    events = []
    previous = 0
    try:
        for cut in list(cuts) + [len(data)]:
            events.extend(parser.feed(data[previous:cut]))
            previous = cut
    except LimitExceeded as e:
        return e.limit
    return [kind for kind, _ in events]


def same_in_every_split(data):
    whole = outcome(data, [])
    assert outcome(data, range(1, len(data))) == whole
    for cut in range(0, len(data), 7):
        assert outcome(data, [cut]) == whole
    return whole


def test_long_complete_header_line_in_an_incomplete_head_is_refused_whatever_the_split():
    # found by atheris: a header line over max_line_length followed by part of another line was
    # refused byte by byte but accepted (until the head completed) when it came in one piece
    data = b'MSRP a1b2c3d4 p\r\nX-Long: ' + b'\xc5' * 310 + b'\r\nD\xaa\xff'
    assert same_in_every_split(data) == 'max_line_length'


def test_long_header_lines_completed_in_one_feed_are_refused():
    parser = MSRPParser(**LIMITS)
    assert parser.feed(b'MSRP a1b2c3d4 SEND\r\nX-A: 1\r\nX-B') == []
    with pytest.raises(LimitExceeded):
        parser.feed(b': ' + b'x' * 400 + b'\r\nX-C: 3\r\nX-D')


@pytest.mark.parametrize('extra, refused', [(0, False), (1, True)])
def test_header_line_of_exactly_max_line_length_bytes_whatever_the_split(extra, refused):
    line = b'X-A: ' + b'y' * (LIMITS['max_line_length'] - 5 + extra)
    data = b'MSRP a1b2c3d4 SEND\r\n' + line + b'\r\n-------a1b2c3d4$\r\n'
    result = same_in_every_split(data)
    assert (result == 'max_line_length') is refused
    # and with the head incomplete, the line's CR come but not its LF
    result = same_in_every_split(data[:-19])
    assert (result == 'max_line_length') is refused


def test_max_line_length_counts_bytes_not_characters():
    # 200 two-byte characters: 400 bytes, over a limit of 300 although only 200 characters long
    line = ('X-A: ' + '\u00e9' * 200).encode('utf-8')
    data = b'MSRP a1b2c3d4 SEND\r\n' + line + b'\r\n-------a1b2c3d4$\r\n'
    assert same_in_every_split(data) == 'max_line_length'


def test_head_with_a_bad_line_and_a_long_line_is_refused_in_every_split():
    # found by atheris: which error comes first may depend on the split (a lone LF in a line, or the
    # line's length), but every split refuses the head
    data = (b'MSRP a1b2c3d4 p\r\n\x02?3++\n\x00++' + b'+' * 320 + b'emp\r\n\r\nbody')
    from msrplib.protocol import ChunkParseError
    for cuts in ([], [62, 338], range(1, len(data))):
        parser = MSRPParser(**LIMITS)
        with pytest.raises(ChunkParseError):
            previous = 0
            for cut in list(cuts) + [len(data)]:
                parser.feed(data[previous:cut])
                previous = cut
