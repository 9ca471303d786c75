"""Atheris fuzz target: MSRPParser, the header decoders, URI.parse and the digest parsers.

Run for ten minutes (libFuzzer options after the script name)::

    pip install atheris
    python fuzz/fuzz_parser.py -max_total_time=600 -dict=fuzz/msrp.dict /tmp/msrp-corpus fuzz/seeds

(without directories it starts a fresh corpus in a temporary directory).

What counts as a bug (an uncaught exception, which atheris reports with
the input that caused it):

* ``MSRPParser.feed`` raising anything but ``ChunkParseError``, returning a
  malformed event sequence, or holding more bytes than its limits allow;
* the same input cut in other places giving other events;
* a header's ``.decoded`` raising anything but ``HeaderParsingError``;
* a parsed chunk that cannot be encoded back, or whose encoding does not
  parse back to the same chunk;
* ``make_response`` / ``make_report`` raising anything but
  ``HeaderParsingError`` on a parsed chunk;
* ``URI.parse`` raising anything but ``ParsingError``; the digest parsers
  raising anything but ``DigestError``.

Each finding becomes a regression test in ``test/test_hostile_parser.py``.
"""

import os
import random
import sys
import tempfile

import atheris

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

with atheris.instrument_imports():
    from msrplib import digest
    from msrplib.protocol import (
        MSRPParser, MSRPHeader, ChunkParseError, HeaderParsingError, ParsingError, URI,
        CHUNK_START, BODY, CHUNK_END, _HEADER_CLASSES)
    from msrplib.transport import make_response, make_report
    import msrplib.protocol as protocol

# the parser's C fast path (when built) and the pure Python functions, switched by parse(pure_python=True)
C_PATH = (protocol._scan_chunks, protocol._find_marker)
PURE_PYTHON = (None, bytes.find)

LIMITS = dict(max_line_length=300, max_headers=12, max_header_block=1200)
BOUND = max(LIMITS['max_header_block'] + 3, LIMITS['max_line_length'] + 2)
HEADER_CLASSES = sorted(_HEADER_CLASSES.values(), key=lambda cls: cls.name)


def parse(data, cuts, pure_python=False):
    """Feed ``data`` cut at ``cuts``; return (events, error) and check the invariants on the way."""
    protocol._scan_chunks, protocol._find_marker = PURE_PYTHON if pure_python else C_PATH
    parser = MSRPParser(**LIMITS)
    events = []
    previous = 0
    try:
        for cut in sorted(set(cuts)) + [len(data)]:
            events.extend(parser.feed(data[previous:cut]))
            previous = cut
            if parser.buffered > BOUND:
                raise AssertionError('parser holds %d bytes' % parser.buffered)
    except ChunkParseError as e:
        try:
            parser.feed(b'MSRP ')
        except ChunkParseError:
            pass
        else:
            raise AssertionError('parser accepted input after an error')
        return events, e
    return events, None


def chunks_of(events):
    # Reassemble the events into chunks, checking their order.
    result = []
    current = None
    pieces = []
    for kind, value in events:
        if kind is CHUNK_START:
            assert current is None, 'CHUNK_START inside a chunk'
            current, pieces = value, []
        elif kind is BODY:
            assert current is not None and type(value) is bytes and value, 'bad BODY event'
            pieces.append(value)
        else:
            assert kind is CHUNK_END and current is not None and value in ('$', '+', '#'), 'bad CHUNK_END'
            assert current.contflag == value
            current.data = b''.join(pieces)
            result.append(current)
            current = None
    return result


def describe(chunk):
    return (chunk.first_line, [(name, header.encoded) for name, header in chunk.headers.items()],
            chunk.data, chunk.contflag)


def check_chunk(chunk):
    for header in list(chunk.headers.values()):
        try:
            header.decoded
        except HeaderParsingError:
            pass
    for name in ('to_path', 'from_path', 'message_id', 'byte_range', 'status', 'failure_report',
                 'success_report', 'content_type'):
        try:
            getattr(chunk, name)
        except HeaderParsingError:
            pass
    if chunk.method is not None:
        make_response(chunk, 200, 'OK')
        make_response(chunk, 400, 'Bad')
        if chunk.method == 'SEND':
            try:
                make_report(chunk, 200, 'OK')
                make_report(chunk, 400, 'Bad')
            except HeaderParsingError:
                pass
    # a parsed chunk encodes (bytes kept as they came) and parses back to itself
    tid = chunk.transaction_id
    encoded = chunk.encode()
    [again] = chunks_of(MSRPParser().feed(encoded))
    if chunk.transaction_id == tid:
        assert describe(again)[1:] == describe(chunk)[1:] and again.first_line == chunk.first_line, \
            (describe(again), describe(chunk))


def check_text(text):
    for cls in HEADER_CLASSES:
        try:
            cls(text).decoded
        except HeaderParsingError:
            pass
    try:
        MSRPHeader(text.partition(':')[0] or 'X', text).decoded
    except HeaderParsingError:
        pass
    try:
        URI.parse(text)
    except ParsingError:
        pass
    for function in (digest.parse_challenge, digest.parse_authorization, digest.parse_authentication_info):
        try:
            function(text)
        except digest.DigestError:
            pass


def test_one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        check_text(fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes()))
        return
    if mode == 1:
        # bytes decoded the way the parser does: lone surrogates stand for invalid UTF-8
        check_text(fdp.ConsumeBytes(fdp.remaining_bytes()).decode('utf-8', 'surrogateescape'))
        return
    # the second byte picks where the stream is cut, so that the seeds (mode byte, cut byte, MSRP) stay readable
    shuffle = random.Random(fdp.ConsumeIntInRange(0, 255))
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    cuts = [shuffle.randint(0, len(stream)) for _ in range(shuffle.randint(0, 8))]
    if mode == 3:
        stream = b'MSRP a1b2c3d4 ' + stream
    events, error = parse(stream, cuts)
    if C_PATH[0] is not None:
        # the C fast path changes nothing: the same events, chunks and error as the pure Python parser
        py_events, py_error = parse(stream, cuts, pure_python=True)
        assert repr(py_error) == repr(error), (py_error, error)
        assert [kind for kind, _ in py_events] == [kind for kind, _ in events]
        assert list(map(describe, chunks_of(py_events))) == list(map(describe, chunks_of(events)))
    # the same bytes in one piece and byte by byte (for short input) give the same result
    whole_events, whole_error = parse(stream, [])
    # (which error comes first may depend on the split: a bad line or a limit; that there is one may not)
    assert (whole_error is None) == (error is None), (whole_error, error)
    assert len(chunks_of(whole_events)) == len(chunks_of(events)) or error is not None
    if len(stream) <= 400:
        _, bytewise_error = parse(stream, range(len(stream)))
        assert (bytewise_error is None) == (error is None), (bytewise_error, error)
    for chunk in chunks_of(whole_events):
        check_chunk(chunk)


def main():
    seeds = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'seeds')
    argv = list(sys.argv)
    if not any(not arg.startswith('-') for arg in argv[1:]):
        # no corpus given: a fresh one (new inputs are written to the first directory), started from the seeds
        argv += [tempfile.mkdtemp(prefix='msrp-corpus-'), seeds]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == '__main__':
    main()
