"""A live MSRP exchange over loopback: ``python -m msrplib demo``.

Alice (an acceptor, as the answering side of a SIP call would be) and Bob (a
connector) set up a connection the way the seed API describes: each side
prepares, the full local paths are swapped as SDP would swap them, and both
complete.  They chat both ways, Bob sends a multi-megabyte message asking
for a Success-Report, and the traffic log shows every chunk on the wire.
"""

import hashlib
import logging
import time

import gevent

from msrplib.connect import AcceptorDirect, ConnectorDirect
from msrplib.protocol import URI, SuccessReportHeader
from msrplib.session import GreenMSRPSession
from msrplib.trafficlog import Logger


def run_demo(out, use_tls=False, size=3 * 1024 * 1024, host='127.0.0.1', timeout=30):
    """Run the demo, writing the traffic log and a summary to the text stream ``out``.

    Returns 0 on success; raises whatever the library raises on failure.
    """
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter('%(message)s'))
    wire = logging.getLogger('msrplib.demo')
    wire.addHandler(handler)
    wire.setLevel(logging.INFO)
    wire.propagate = False
    try:
        with gevent.Timeout(timeout):
            return _exchange(out, use_tls, size, host, wire)
    finally:
        wire.removeHandler(handler)


def _exchange(out, use_tls, size, host, wire):
    alice_log = Logger(prefix='[alice] ', log_traffic=True, logger=wire)
    bob_log = Logger(prefix='[bob] ', log_traffic=True, logger=wire)
    acceptor = AcceptorDirect(logger=alice_log)
    connector = ConnectorDirect(logger=bob_log)

    alice_path = acceptor.prepare(URI(host=host, port=0, use_tls=use_tls))
    bob_path = connector.prepare(URI(host=host, use_tls=use_tls))
    if use_tls:
        connector.expected_fingerprint = acceptor.fingerprint  # what a=fingerprint in Alice's SDP carries
    out.write('alice a=path:%s\n' % ' '.join(str(uri) for uri in alice_path))
    out.write('bob   a=path:%s\n\n' % ' '.join(str(uri) for uri in bob_path))

    started = time.monotonic()
    accepting = gevent.spawn(acceptor.complete, bob_path)
    try:
        bob_transport = connector.complete(alice_path)
        alice_transport = accepting.get()
    finally:
        acceptor.cleanup()
        connector.cleanup()
    alice = GreenMSRPSession(alice_transport, accept_types=['text/plain', 'application/*'])
    bob = GreenMSRPSession(bob_transport, accept_types=['text/plain', 'message/cpim'])

    bob.deliver_message('Hello Alice, are you there?', 'text/plain')
    line = alice.receive_chunk()
    alice.deliver_message('Yes Bob, I am here.', 'text/plain')
    reply = bob.receive_chunk()

    payload = bytes(range(256)) * (size // 256) + b'.' * (size % 256)
    big = bob.make_message(payload, 'application/octet-stream')
    big.add_header(SuccessReportHeader('yes'))
    sent_at = time.monotonic()
    bob.deliver_chunk(big)
    received = alice.receive_chunk()
    report = bob.receive_chunk()
    elapsed = time.monotonic() - sent_at

    bob.shutdown()
    alice.shutdown()
    ok = (received.data == payload and report.method == 'REPORT' and report.status.code == 200)
    out.write('\nSummary\n')
    out.write('  transport:       %s\n' % ('msrps (TLS, fingerprint checked)' if use_tls else 'msrp (TCP)'))
    out.write('  alice received:  %r\n' % line.data.decode())
    out.write('  bob received:    %r\n' % reply.data.decode())
    out.write('  large message:   %d bytes in %.3f s, sha1 %s, %s\n' % (
        len(received.data), elapsed, hashlib.sha1(received.data).hexdigest()[:12],
        'intact' if received.data == payload else 'CORRUPTED'))
    out.write('  success report:  %s %s, Byte-Range %s\n' % (report.status.code, report.status.comment,
                                                            report.headers['Byte-Range'].encoded))
    out.write('  total time:      %.3f s\n' % (time.monotonic() - started))
    out.write('  result:          %s\n' % ('OK' if ok else 'FAILED'))
    return 0 if ok else 1
