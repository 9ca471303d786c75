#!/usr/bin/env python3
"""Every msrplib benchmark in one command, one table (a script, not a test).

    python bench/run.py [--quick] [--only W1,W2,W3,W4,W5,MEM,TLS,RELAY,WS] [--sessions N] [--repeat R]

Workloads (sender and receiver in separate processes except W4 and W5):

W1   chat: 5,000 x 100 B text messages with ``deliver_message`` (deliver_chunk),
     one after another.  Reference: round trips/s of a raw blocking-socket
     ping-pong of 100 B between two processes (bench_session.raw_ping_pong).
     Run twice: as the OS places the two processes (the W1 figure), and with
     both pinned to one CPU (W1/1cpu; the raw reference pinned alike): on a
     VM where waking the other CPU is slow, the placement moves the figure
     more than the code does.  W1/bridge: the same messages sent from an
     asyncio loop through msrplib.bridge (``await session.deliver_message``,
     the receiver native), referenced to the W1 figure: the cost of a call
     across the bridge (bench_session.run_pair('W1B')).
W2   pipelined: 20,000 x 100 B with ``send_chunk`` and Failure-Report no,
     counted by the receiver (bench_session.run_pair).  No reference.
W3   bulk: 128 MiB as 64 KiB chunks of ONE message through the session's
     ``send_chunk``, received with ``GreenMSRPSession.receive_chunk``; the
     receiver checks the byte count and every Byte-Range.  Reference: the
     same bytes through raw blocking sockets.  Sender and receiver pinned to
     one CPU each (bench_bulk.py --layer session).
W4   the parser alone: 100,000 SEND chunks of ~400 B fed in 64 KiB pieces,
     each chunk's Byte-Range and Message-ID decoded (bench_parser.run_small).
W5   concurrency: N bound idle MSRPSession pairs in one process over one
     MSRPServer port: set-up rate and RSS per session side
     (bench_concurrency.py; N = 2,000, ``--sessions 10000`` for the full figure).
MEM  one 1 GiB SEND chunk received with ``read_chunk(size=1 MiB)``: the
     receiver's peak RSS growth over its RSS once bound (bench_memory.py).
TLS  W3 over msrps, with a raw TLS-socket reference; the plain W3 figure
     is printed next to it.
RELAY bulk through a local Kamailio relay, both ends through it, over TCP and
     over TLS: 256 MiB (32 MiB with --quick) as one message with
     ``send_large_message`` and its defaults (8 KiB chunks, paced on the
     receiver's REPORTs), next to the same transfer on a direct connection
     in the same run (bench_relay.py).  Skipped when Kamailio is missing.
WS   MSRP over WebSocket (RFC 7977) through the same kind of Kamailio relay,
     both ends over ws:// next to both ends over plain TCP, one relay for
     both: W1 (5,000 x 100 B deliver_message one by one; 500 with --quick;
     the 200 comes from the relay, hop by hop) and bulk (256 MiB as one
     send_large_message; 32 MiB with --quick) (bench_relay.py --websocket).
     Skipped when Kamailio or its websocket module is missing.

Each figure is the median of ``--repeat`` runs (default 3; W5 and MEM run
once), measured and reference runs alternating so that a change of load on
the machine hits both alike.  ``--quick`` is a smoke run: a tenth of the
messages, 16 MiB bulk, 200 pairs, a 64 MiB message, one run each.  The
defaults finish in well under 3 minutes on a 2-core machine.  The machine
should be otherwise idle: loopback figures vary a lot with other load.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import bench_bulk  # noqa: E402
import bench_parser  # noqa: E402
import bench_session  # noqa: E402

WORKLOADS = ('W1', 'W2', 'W3', 'W4', 'W5', 'MEM', 'TLS', 'RELAY', 'WS')


class Row:
    def __init__(self, workload, what, figure, unit, reference=None, ratio=None, target='', met=None, note=''):
        self.workload, self.what, self.figure, self.unit = workload, what, figure, unit
        self.reference, self.ratio, self.target, self.met, self.note = reference, ratio, target, met, note


def median(values):
    return statistics.median(values)


def spread(values, fmt='%.0f'):
    return '' if len(values) < 2 else 'runs ' + ', '.join(fmt % v for v in values)


# ---------------------------------------------------------------------------
# Workloads

def w1(options):
    count = 500 if options.quick else 5000
    rows = []
    for name, placement, what in (('W1', None, 'chat: %d x 100 B deliver_chunk, one by one' % count),
                                  ('W1/1cpu', 'same', 'the same, both processes on one CPU')):
        rates, references = [], []
        for _ in range(options.repeat):
            references.append(bench_session.raw_ping_pong(count, placement))
            rates.append(bench_session.run_pair('W1', count, placement=placement)[0])
        rate, reference = median(rates), median(references)
        rows.append(Row(name, what, rate, 'msg/s', '%.0f rt/s' % reference, rate / reference, '>= 8,000 msg/s',
                        rate >= 8000, 'mean round trip %.0f us; %s' % (1e6 / rate, spread(rates))))
    rows.append(w1_bridge(options, count, rows[0].figure))
    return rows


def w1_bridge(options, count, native):
    """W1 via bridge (asyncio): W1's messages awaited from an asyncio loop through msrplib.bridge."""
    rates = [bench_session.run_pair('W1B', count)[0] for _ in range(options.repeat)]
    rate = median(rates)
    return Row('W1/bridge', 'W1 via bridge (asyncio): await deliver_message', rate, 'msg/s',
               '%.0f msg/s W1' % native, rate / native, '', None,
               'mean round trip %.0f us, %.0f us more than native W1 per call; %s'
               % (1e6 / rate, 1e6 / rate - 1e6 / native, spread(rates)))


def w2(options):
    count = 2000 if options.quick else 20000
    rates = [bench_session.run_pair('W2', count)[0] for _ in range(options.repeat)]
    rate = median(rates)
    return [Row('W2', 'pipelined: %d x 100 B send_chunk, FR no' % count, rate, 'msg/s',
                target='>= 40,000 msg/s', met=rate >= 40000, note=spread(rates))]


def _bulk_options(options, tls, directory):
    size = 16 if options.quick else 128
    args = argparse.Namespace(chunk=64 * 1024, tls=tls, no_pin=False, cert=None, key=None, fingerprint=None)
    args.total = size * 1024 * 1024
    if tls:
        args.cert, args.key, args.fingerprint = bench_bulk.make_tls_files(directory)
    return size, args


def _bulk(options, tls, directory):
    size, args = _bulk_options(options, tls, directory)
    raws, sessions = [], []
    for _ in range(options.repeat):
        raws.append(args.total / bench_bulk.transfer('raw', args) / 1e6)
        sessions.append(args.total / bench_bulk.transfer('session', args) / 1e6)
    ratios = [s / r for s, r in zip(sessions, raws)]
    return size, median(sessions), median(raws), median(ratios), sessions


def w3(options, directory):
    size, rate, raw, ratio, rates = _bulk(options, False, directory)
    options.w3_rate = rate
    return [Row('W3', 'bulk: %d MiB, 64 KiB chunks, session send_chunk' % size, rate, 'MB/s',
                '%.0f MB/s raw' % raw, ratio, '>= 60 % of raw', ratio >= 0.6,
                'median of per-run ratios; %s' % spread(rates))]


def tls_bulk(options, directory):
    size, rate, raw, ratio, rates = _bulk(options, True, directory)
    plain = getattr(options, 'w3_rate', None)
    note = 'plain W3: %.0f MB/s; ' % plain if plain else ''
    return [Row('TLS', 'bulk over msrps: %d MiB, session send_chunk' % size, rate, 'MB/s',
                '%.0f MB/s raw TLS' % raw, ratio, '', None, note + spread(rates))]


def w4(options):
    count = 10000 if options.quick else 100000
    templates = [bench_parser.small_chunk(i) for i in range(1000)]
    feeds = bench_parser.pieces(b''.join(templates[i % len(templates)] for i in range(count)))
    times = [bench_parser.run_small(feeds, count) for _ in range(options.repeat)]
    rate = count / median(times)
    rates = [count / t for t in times]
    return [Row('W4', 'parser: %d x ~400 B chunks, 64 KiB feeds' % count, rate, 'chunks/s',
                target='>= 150,000 chunks/s', met=rate >= 150000, note='best %.0f; %s' % (max(rates), spread(rates)))]


def _child_json(script, *arguments):
    output = subprocess.run([sys.executable, os.path.join(HERE, script)] + list(arguments) + ['--json'],
                            check=True, stdout=subprocess.PIPE, text=True, timeout=900).stdout
    return json.loads(output.strip().splitlines()[-1])


def w5(options):
    sessions = options.sessions or (200 if options.quick else 2000)
    result = _child_json('bench_concurrency.py', '--sessions', str(sessions))
    per_side = result['bytes_per_side'] / 1024
    if result['sessions'] != sessions:
        sessions = result['sessions']
        result['note'] = '; capped by RLIMIT_NOFILE=%d (hard, not raisable here)' % result['nofile']
    return [Row('W5', '%d idle session pairs, one MSRPServer port: set-up' % sessions, result['setup_rate'],
                'pairs/s', note='%.1f s; %d pairs connected at the end%s'
                               % (result['setup_seconds'], result['alive'], result.get('note', ''))),
            Row('W5', '%d idle session pairs: RSS per session side' % sessions, per_side, 'KiB',
                target='<= 20 KiB (10,000 pairs)', met=per_side <= 20,
                note='RSS %.0f -> %.0f MiB' % (result['rss_before'] / 2**20, result['rss_after'] / 2**20))]


def memory(options):
    size = 64 if options.quick else 1024
    result = _child_json('bench_memory.py', '--size', str(size))
    peak = max(result['peak_rss'], result['hwm'] or 0)
    growth = (peak - result['start_rss']) / 2**20
    return [Row('MEM', '%d MiB message, read_chunk(size=1 MiB): RSS growth' % size, growth, 'MiB',
                target='<= 64 MiB', met=growth <= 64,
                note='receiver RSS %.0f -> peak %.0f MiB; %.0f MB/s'
                     % (result['start_rss'] / 2**20, peak / 2**20, result['bytes'] / result['elapsed'] / 1e6))]


def relay_bulk(options):
    from msrplib.testing.kamailio import kamailio_available
    if not kamailio_available():
        sys.stderr.write('RELAY skipped: Kamailio with the msrp module is not installed\n')
        return []
    size = 32 if options.quick else 256
    result = _child_json('bench_relay.py', '--size', str(size), '--repeat', str(options.repeat))
    direct = result['direct']
    runs = result['runs']
    return [Row('RELAY', 'bulk via Kamailio, both ends, TCP: %d MiB send_large_message' % size, result['tcp'],
                'MB/s', '%.0f MB/s direct' % direct, result['tcp'] / direct, '>= 50 % of direct',
                result['tcp'] >= 0.5 * direct, 'TCP runs %s; direct runs %s'
                % (', '.join('%.0f' % r for r in runs['tcp']), ', '.join('%.0f' % r for r in runs['direct']))),
            Row('RELAY', 'bulk via Kamailio, both ends, TLS: %d MiB send_large_message' % size, result['tls'],
                'MB/s', '%.0f MB/s direct' % direct, result['tls'] / direct, '', None,
                'TLS runs %s' % ', '.join('%.0f' % r for r in runs['tls']))]


def websocket_relay(options):
    from msrplib.testing.kamailio import kamailio_available
    if not kamailio_available():
        sys.stderr.write('WS skipped: Kamailio with the msrp and websocket modules is not installed\n')
        return []
    size = 32 if options.quick else 256
    count = 500 if options.quick else 5000
    result = _child_json('bench_relay.py', '--websocket', '--size', str(size), '--count', str(count),
                         '--repeat', str(options.repeat))
    runs = result['runs']

    def row(kind, what, unit):
        tcp, ws = result[kind + 'tcp'], result[kind + 'ws']
        return Row('WS', what, ws, unit, '%.0f %s over TCP' % (tcp, unit), ws / tcp, '', None,
                   'ws runs %s; TCP runs %s' % (', '.join('%.0f' % r for r in runs[kind + 'ws']),
                                               ', '.join('%.0f' % r for r in runs[kind + 'tcp'])))
    return [row('chat_', 'W1 via Kamailio over ws://, both ends: %d x 100 B deliver_message' % count, 'msg/s'),
            row('', 'bulk via Kamailio over ws://, both ends: %d MiB send_large_message' % size, 'MB/s')]


# ---------------------------------------------------------------------------

def print_table(rows, out=sys.stdout):
    header = ('workload', 'what', 'figure', 'unit', 'reference', 'ratio', 'target', 'met')
    table = [header]
    for row in rows:
        figure = '%.1f' % row.figure if row.figure < 100 else '{:,.0f}'.format(row.figure)
        table.append((row.workload, row.what, figure, row.unit, row.reference or '',
                      '' if row.ratio is None else '%.0f %%' % (100 * row.ratio), row.target,
                      '' if row.met is None else ('yes' if row.met else 'NO')))
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for number, line in enumerate(table):
        out.write('  '.join(str(cell).rjust(width) if index in (2, 5) else str(cell).ljust(width)
                            for index, (cell, width) in enumerate(zip(line, widths))).rstrip() + '\n')
        if number == 0:
            out.write('  '.join('-' * width for width in widths) + '\n')
    notes = [(row.workload, row.note.strip().rstrip(';')) for row in rows if row.note.strip().rstrip(';')]
    if notes:
        out.write('\n')
        for workload, note in notes:
            out.write('%-4s %s\n' % (workload, note))


def machine():
    model = 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    import gevent
    import greenlet
    return '%d CPUs (%s), Python %s, gevent %s, greenlet %s' % (
        os.cpu_count(), model, sys.version.split()[0], gevent.__version__, greenlet.__version__)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='smoke run: small sizes, one run each')
    parser.add_argument('--only', help='comma-separated workloads among %s (default: all)' % ','.join(WORKLOADS))
    parser.add_argument('--sessions', type=int, help='W5 session pairs (default 2,000; 10000 for the full figure)')
    parser.add_argument('--repeat', type=int, help='runs per measured figure (default 3; 1 with --quick)')
    options = parser.parse_args(argv)
    selected = WORKLOADS
    if options.only:
        selected = [name.strip().upper() for name in options.only.split(',') if name.strip()]
        unknown = [name for name in selected if name not in WORKLOADS]
        if unknown:
            parser.error('unknown workload(s): %s' % ', '.join(unknown))
    if options.repeat is None:
        options.repeat = 1 if options.quick else 3
    print('msrplib benchmarks%s: %s' % (' (--quick)' if options.quick else '', machine()))
    print('median of %d run(s); started %s' % (options.repeat, time.strftime('%Y-%m-%d %H:%M:%S')))
    print()
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix='msrplib-bench-') as directory:
        for name in WORKLOADS:
            if name not in selected:
                continue
            sys.stderr.write('running %s...\n' % name)
            if name == 'W1':
                rows += w1(options)
            elif name == 'W2':
                rows += w2(options)
            elif name == 'W3':
                rows += w3(options, directory)
            elif name == 'W4':
                rows += w4(options)
            elif name == 'W5':
                rows += w5(options)
            elif name == 'MEM':
                rows += memory(options)
            elif name == 'TLS':
                rows += tls_bulk(options, directory)
            elif name == 'RELAY':
                rows += relay_bulk(options)
            elif name == 'WS':
                rows += websocket_relay(options)
    print_table(rows)
    print('\n(%.0f s)' % (time.monotonic() - started))
    return 0


if __name__ == '__main__':
    sys.exit(main())
