"""Large messages through Kamailio to a receiver behind a real-MTU link (a veth pair into a network namespace).

    sudo python3 test/relay/netns_probe.py [--size MiB] [--runs N] [--mtu BYTES] [--tls]
                                           [--window BYTES] [--interval BYTES] [--path-bytes BYTES]
                                           [--stall-after BYTES --stall-for SECONDS] [--rate MB/s] [--report-timeout S]

On loopback (64 KiB segments) the kernel buffers on Kamailio's connection to
the receiver hold megabytes from the start; over a link with a 1500-byte MTU
they hold a few tens of KB, and Kamailio (default settings) drops frames once
its 32 KiB per-connection write queue is full.  This probe measures that:
it makes a network namespace joined to the host by a veth pair at ``--mtu``,
starts Kamailio (``msrplib.testing.KamailioRelay``, warnings-only log) on the
host's veth address, runs the receiver (an ``AcceptorRelay`` session with a
``MessageAssembler`` into a counting sink) in the namespace and the sender
(``ConnectorRelay``, ``send_large_message``) here, both through the relay.
``--window`` sets the sender's ``REPORT_WINDOW``, ``--interval`` the
receiver's ``PROGRESS_REPORT_INTERVAL``, ``--path-bytes`` its
``RELAY_PATH_BYTES`` (default: the library's);
``--stall-after``/``--stall-for`` stop the receiver process once (it reads
nothing meanwhile), ``--rate`` makes it a slow consumer.  Each run
prints whether the message was confirmed, its time, and the lines of
Kamailio's log that say it dropped a frame.  Needs root and iproute2 (``ip``);
everything it made is removed at the end.  doc/relay.md ("Flow control")
has the figures.
"""

import argparse
import json
import os
import random
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'bench'))

from bench_relay import Sink, Zeros  # noqa: E402  (a source of N bytes, a sink that counts what it is given)

MiB = 1024 * 1024
OVERFLOW_LINES = ('write queue full', 'ct write buffer full')


class SlowSink(Sink):
    """A counting sink that stops the whole receiver process (a blocking sleep: nothing is read meanwhile) for
    ``stall_for`` seconds once ``stall_after`` bytes were written, and that writes at most ``rate`` MB/s (a slow
    disk; 0: no limit)."""

    def __init__(self, stall_after, stall_for, rate):
        super().__init__()
        self.stall_after, self.stall_for, self.rate = stall_after, stall_for, rate * 1e6
        self.started = time.monotonic()

    def write(self, data):
        written = super().write(data)
        if self.stall_for and self.written >= self.stall_after:
            time.sleep(self.stall_for)
            self.stall_for = 0
        if self.rate:
            ahead = self.written / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)
        return written


def receiver(info):
    """In the namespace: accept one peer through the relay, receive one message, print its size (JSON)."""
    import gevent
    from msrplib.message import MessageAssembler
    from msrplib.relay import AcceptorRelay, MSRPRelaySettings
    from msrplib.session import GreenMSRPSession
    context = ssl.create_default_context(cafile=info['ca']) if info['tls'] else None
    settings = MSRPRelaySettings(info['domain'], info['username'], info['password'], host=info['host'],
                                 port=info['port'], use_tls=info['tls'], credentials=context)
    sinks = []

    def open_file(message):
        sinks.append(SlowSink(info['stall_after'], info['stall_for'], info['rate']))
        return sinks[-1]
    acceptor = AcceptorRelay(settings)
    print(' '.join(str(uri) for uri in acceptor.prepare()), flush=True)
    with gevent.Timeout(info['timeout']):
        session = GreenMSRPSession(acceptor.complete(None),
                                   assembler=MessageAssembler(max_message_size=1 << 40, open_file=open_file))
        if info['interval']:
            session.PROGRESS_REPORT_INTERVAL = info['interval']
        if info.get('path_bytes'):
            session.RELAY_PATH_BYTES = info['path_bytes']
        message = session.receive_chunk()
        session.shutdown()
    print(json.dumps({'size': message.size, 'written': sinks[0].written if sinks else None}), flush=True)


def ip(*args, namespace=None):
    """Run ``ip *args`` (in ``namespace``); raises subprocess.CalledProcessError, with ip's stderr, when it fails."""
    command = ['ip'] + (['netns', 'exec', namespace, 'ip'] if namespace else []) + list(args)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class Link:
    """A network namespace joined to the host by a veth pair at ``mtu``: host end ``host_ip``, namespace end
    ``peer_ip``.  Removed by close()."""

    def __init__(self, mtu):
        tag = '%d' % os.getpid()
        self.namespace = 'msrpprobe' + tag
        self.host_if, self.peer_if = 'mph' + tag, 'mpr' + tag
        used = subprocess.run(['ip', '-o', '-4', 'addr'], capture_output=True, text=True).stdout
        net = random.choice([n for n in range(1, 250) if ' 10.231.%d.' % n not in used])
        self.host_ip, self.peer_ip = '10.231.%d.1' % net, '10.231.%d.2' % net
        ip('netns', 'add', self.namespace)
        try:
            ip('link', 'add', self.host_if, 'type', 'veth', 'peer', 'name', self.peer_if)
            ip('link', 'set', self.peer_if, 'netns', self.namespace)
            ip('addr', 'add', self.host_ip + '/24', 'dev', self.host_if)
            ip('link', 'set', self.host_if, 'mtu', str(mtu), 'up')
            ip('addr', 'add', self.peer_ip + '/24', 'dev', self.peer_if, namespace=self.namespace)
            ip('link', 'set', self.peer_if, 'mtu', str(mtu), 'up', namespace=self.namespace)
            ip('link', 'set', 'lo', 'up', namespace=self.namespace)
        except Exception:
            self.close()
            raise

    def close(self):
        subprocess.run(['ip', 'link', 'del', self.host_if], stderr=subprocess.DEVNULL)
        subprocess.run(['ip', 'netns', 'del', self.namespace], stderr=subprocess.DEVNULL)


class _Lines:
    """Lines of a child's stdout (a binary pipe), each read under a deadline without blocking other greenlets."""

    def __init__(self, pipe):
        self.pipe, self.buffer = pipe, b''

    def readline(self, timeout):
        """The next line (decoded, stripped); '' at end of file or when ``timeout`` seconds pass first."""
        import gevent.select
        deadline = time.monotonic() + timeout
        while b'\n' not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not gevent.select.select([self.pipe], [], [], left)[0]:
                return ''
            data = os.read(self.pipe.fileno(), 65536)
            if not data:
                break
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b'\n')
        return line.decode(errors='replace').strip()


def transfer(relay, link, size, tls=False, window=0, interval=0, path_bytes=0, stall_after=0, stall_for=0, rate=0,
             report_timeout=0, timeout=120):
    """Send one message of ``size`` bytes from here to a receiver process in ``link``'s namespace, both ends through
    ``relay`` (a started KamailioRelay on ``link.host_ip``), over TLS when ``tls``.  ``window`` sets the sender's
    ``REPORT_WINDOW``, ``report_timeout`` its ``SUCCESS_REPORT_TIMEOUT``; ``interval`` the receiver's
    ``PROGRESS_REPORT_INTERVAL``, ``path_bytes`` its ``RELAY_PATH_BYTES`` (0: the library's defaults for all four);
    ``stall_after``/``stall_for``/``rate`` as for ``SlowSink``.  Every wait is bounded by ``timeout`` seconds.

    Returns (confirmed, seconds, comment, dropped): whether the message was confirmed, the sender's time from the
    call to the end of ``message.wait()``, the receiver's JSON line (``{"size": ..., "written": ...}``) when it was
    confirmed or else why not, and the lines Kamailio logged meanwhile that say it dropped a frame."""
    import gevent
    from msrplib.protocol import URI
    from msrplib.relay import ConnectorRelay
    from msrplib.session import GreenMSRPSession
    port = relay.tls_port if tls else relay.port
    info = {'domain': relay.domain, 'username': relay.username, 'password': relay.password, 'host': relay.host,
            'port': port, 'tls': tls, 'ca': relay.ca_file, 'interval': interval, 'path_bytes': path_bytes,
            'stall_after': stall_after, 'stall_for': stall_for, 'rate': rate, 'timeout': timeout}
    before = len(relay.log_text())
    child = subprocess.Popen(['ip', 'netns', 'exec', link.namespace, sys.executable, os.path.abspath(__file__),
                              '--receiver', json.dumps(info)], stdout=subprocess.PIPE, bufsize=0)
    lines = _Lines(child.stdout)
    connector = None
    session = None
    started = time.monotonic()
    try:
        path = [URI.parse(text) for text in lines.readline(30).split()]
        if not path:
            return False, 0.0, 'the receiver did not start', []
        connector = ConnectorRelay(relay.settings(tls))
        with gevent.Timeout(30):
            connector.prepare()
            session = GreenMSRPSession(connector.complete(path))
        if window:
            session.REPORT_WINDOW = window
        if report_timeout:
            session.SUCCESS_REPORT_TIMEOUT = report_timeout
        started = time.monotonic()
        message = session.send_large_message(Zeros(size), 'application/octet-stream')
        timer = gevent.Timeout(timeout)
        try:
            with timer:
                message.wait()
        except gevent.Timeout as e:
            if e is not timer:
                raise
            return False, time.monotonic() - started, 'no outcome within %s s' % timeout, _dropped(relay, before)
        except Exception as e:  # the outcome is what this reports, whatever it is
            return False, time.monotonic() - started, str(e) or type(e).__name__, _dropped(relay, before)
        seconds = time.monotonic() - started
        comment = lines.readline(timeout) if message.confirmed else 'not confirmed'
        return message.confirmed, seconds, comment or 'the receiver said nothing', _dropped(relay, before)
    finally:
        if session is not None:
            session.shutdown(sync=False)
        if connector is not None:
            connector.cleanup()
        child.kill()
        child.wait()
        child.stdout.close()


def _dropped(relay, before):
    return [line.strip() for line in relay.log_text()[before:].splitlines()
            if any(text in line for text in OVERFLOW_LINES)]


def run(relay, link, options):
    """One transfer as the command line asks; returns transfer()'s (confirmed, seconds, comment, dropped)."""
    return transfer(relay, link, options.size * MiB, tls=options.tls, window=options.window,
                    interval=options.interval, path_bytes=options.path_bytes, stall_after=options.stall_after,
                    stall_for=options.stall_for, rate=options.rate, report_timeout=options.report_timeout,
                    timeout=options.timeout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=32, help='MiB per message (default 32)')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--mtu', type=int, default=1500)
    parser.add_argument('--tls', action='store_true')
    parser.add_argument('--window', type=int, default=0, help="the sender's REPORT_WINDOW (default: the library's)")
    parser.add_argument('--interval', type=int, default=0,
                        help="the receiver's PROGRESS_REPORT_INTERVAL (default: the library's)")
    parser.add_argument('--path-bytes', type=int, default=0,
                        help="the receiver's RELAY_PATH_BYTES (default: the library's estimate)")
    parser.add_argument('--stall-after', type=int, default=0,
                        help='the receiver stops reading once it has that many bytes ... (default 0)')
    parser.add_argument('--stall-for', type=float, default=0, help='... for that many seconds (default 0: never)')
    parser.add_argument('--rate', type=float, default=0, help='the receiver takes at most that many MB/s')
    parser.add_argument('--report-timeout', type=float, default=0,
                        help="the sender's SUCCESS_REPORT_TIMEOUT (default: the library's)")
    parser.add_argument('--timeout', type=float, default=120)
    parser.add_argument('--receiver', help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.receiver:
        receiver(json.loads(options.receiver))
        return 0
    from msrplib.testing import KamailioRelay
    link = Link(options.mtu)
    try:
        with KamailioRelay(host=link.host_ip, debug=1) as relay:
            for number in range(1, options.runs + 1):
                confirmed, seconds, comment, dropped = run(relay, link, options)
                print('run %d: %s in %.1f s; %s; Kamailio dropped frames: %s'
                      % (number, 'confirmed' if confirmed else 'FAILED', seconds, comment[:120],
                         dropped[0][:160] if dropped else 'no'), flush=True)
    finally:
        link.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
