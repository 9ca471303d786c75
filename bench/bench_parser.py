"""Throughput of msrplib.protocol.MSRPParser (a script, not a test).

    python bench/bench_parser.py [--quick] [--profile small|large]

(a) small chunks: 100,000 SEND chunks of about 400 bytes each, as a chat
    client sends them (To-Path and From-Path with one msrps URI each, Message-ID,
    Byte-Range, Success-Report, Failure-Report, Content-Type and a ~100 byte
    body), concatenated and fed in 64 KiB pieces.  Every chunk is consumed as
    a receiver would: its Byte-Range and Message-ID are decoded.
(b) large chunks: chunks with 64 KiB bodies fed in 64 KiB pieces; reported
    as MB/s of body (1 MB = 10**6 bytes).

Runs on one core (the parser is plain Python); each figure is the best of a
few runs.  Targets: >= 150,000 small chunks/s and >= 1 GB/s of body.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from msrplib.protocol import (MSRPParser, MSRPData, MSRPHeader, CHUNK_START, BODY,  # noqa: E402
                              CHUNK_END, random_transaction_id, random_message_id)

PIECE = 64 * 1024
SMALL_TARGET = 150000     # chunks/s
LARGE_TARGET = 1000.0     # MB/s


def small_chunk(index):
    body = ('Message %06d: ' % index + 'hello, how are you today? ' * 4)[:100].encode('ascii')
    chunk = MSRPData(random_transaction_id(), method='SEND', data=body)
    chunk.add_header(MSRPHeader('To-Path', 'msrps://192.0.2.20:2855/%s;tcp' % os.urandom(10).hex()))
    chunk.add_header(MSRPHeader('From-Path', 'msrps://192.0.2.10:2855/%s;tcp' % os.urandom(10).hex()))
    chunk.add_header(MSRPHeader('Message-ID', random_message_id()))
    chunk.add_header(MSRPHeader('Byte-Range', '1-%d/%d' % (len(body), len(body))))
    chunk.add_header(MSRPHeader('Success-Report', 'yes'))
    chunk.add_header(MSRPHeader('Failure-Report', 'yes'))
    chunk.add_header(MSRPHeader('Content-Type', 'text/plain'))
    return chunk.encode()


def large_chunk(index, size):
    body = os.urandom(size)
    chunk = MSRPData(random_transaction_id(), method='SEND', data=body, contflag='+')
    chunk.add_header(MSRPHeader('To-Path', 'msrps://bob@198.51.100.23:2855/%s;tcp' % os.urandom(10).hex()))
    chunk.add_header(MSRPHeader('From-Path', 'msrps://alice@203.0.113.17:2855/%s;tcp' % os.urandom(10).hex()))
    chunk.add_header(MSRPHeader('Message-ID', 'file-transfer-1'))
    start = index * size + 1
    chunk.add_header(MSRPHeader('Byte-Range', '%d-%d/*' % (start, start + size - 1)))
    chunk.add_header(MSRPHeader('Content-Type', 'application/octet-stream'))
    return chunk.encode()


def pieces(stream, size=PIECE):
    view = memoryview(stream)
    return [bytes(view[i:i + size]) for i in range(0, len(stream), size)]


def run_small(feeds, expected):
    parser = MSRPParser()
    feed = parser.feed
    chunks = 0
    checksum = 0
    started = time.perf_counter()
    for data in feeds:
        for kind, value in feed(data):
            if kind is CHUNK_START:
                byte_range = value.byte_range
                checksum += byte_range.start + len(value.message_id)
            elif kind is CHUNK_END:
                chunks += 1
    elapsed = time.perf_counter() - started
    assert chunks == expected, (chunks, expected)
    assert parser.buffered == 0
    return elapsed


def run_large(feeds, expected_chunks, expected_body):
    parser = MSRPParser()
    feed = parser.feed
    chunks = 0
    body = 0
    started = time.perf_counter()
    for data in feeds:
        for kind, value in feed(data):
            if kind is BODY:
                body += len(value)
            elif kind is CHUNK_END:
                chunks += 1
            else:
                value.byte_range
    elapsed = time.perf_counter() - started
    assert chunks == expected_chunks and body == expected_body, (chunks, body)
    return elapsed


def best_of(runs, function, *args):
    return min(function(*args) for _ in range(runs))


def main():
    options = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    options.add_argument('--quick', action='store_true', help='a tenth of the work, one run each')
    options.add_argument('--profile', choices=('small', 'large'), help='run one case under cProfile')
    args = options.parse_args()
    small_count = 10000 if args.quick else 100000
    large_count = 1600 if args.quick else 16000   # 100 MB / 1 GB of body
    runs = 1 if args.quick else 3

    templates = [small_chunk(i) for i in range(1000)]
    small_stream = b''.join(templates[i % len(templates)] for i in range(small_count))
    small_size = sum(map(len, templates)) / len(templates)
    small_feeds = pieces(small_stream)

    large_templates = [large_chunk(i, 65536) for i in range(16)]
    large_stream = b''.join(large_templates[i % len(large_templates)] for i in range(large_count // 16 and 16))
    repeat = large_count // 16
    large_feeds = pieces(large_stream) * repeat
    large_body = 65536 * 16 * repeat

    if args.profile:
        import cProfile
        import pstats
        if args.profile == 'small':
            cProfile.runctx('run_small(small_feeds, small_count)', globals(), locals(), '/tmp/bench_parser.prof')
        else:
            cProfile.runctx('run_large(large_feeds, 16 * repeat, large_body)', globals(), locals(),
                            '/tmp/bench_parser.prof')
        pstats.Stats('/tmp/bench_parser.prof').sort_stats('tottime').print_stats(15)
        return

    small_time = best_of(runs, run_small, small_feeds, small_count)
    large_time = best_of(runs, run_large, large_feeds, 16 * repeat, large_body)
    small_rate = small_count / small_time
    large_rate = large_body / large_time / 1e6

    print('MSRPParser throughput (Python %s, one core, best of %d)' % (sys.version.split()[0], runs))
    print()
    print('%-44s %14s %12s %8s' % ('case', 'result', 'target', 'met'))
    print('%-44s %14s %12s %8s' % ('-' * 44, '-' * 14, '-' * 12, '-' * 8))
    print('%-44s %9.0f ch/s %7d ch/s %8s' % (
        'small SEND chunks (%d x %.0f B, 64 KiB feeds)' % (small_count, small_size),
        small_rate, SMALL_TARGET, 'yes' if small_rate >= SMALL_TARGET else 'NO'))
    print('%-44s %9.0f MB/s %7.0f MB/s %8s' % (
        '64 KiB bodies (%d chunks, 64 KiB feeds)' % (16 * repeat),
        large_rate, LARGE_TARGET, 'yes' if large_rate >= LARGE_TARGET else 'NO'))
    return 0 if small_rate >= SMALL_TARGET and large_rate >= LARGE_TARGET else 1


if __name__ == '__main__':
    sys.exit(main())
