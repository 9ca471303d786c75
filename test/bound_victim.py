"""The victim process of test/test_hostile_bound_peers.py: one session whose application does not read.

    python test/bound_victim.py KIND ATTACKER_URI

An MSRPServer listens on 127.0.0.1 (plain TCP, OS-chosen port) and the
process prints the URI to bind to on stdout; once the connection from
ATTACKER_URI is bound it prints ``bound`` and starts the session with the
library's defaults:

``green``
    a GreenMSRPSession whose application never calls ``receive_chunk()``;
``callback``
    an MSRPSession whose ``on_incoming_cb`` blocks for ever on the first
    chunk (a stuck application).

Then it waits until it is killed (or until the session ends: it prints
``ended <reason>``).  The test measures its memory from outside (psutil).
"""

import sys

import gevent
from gevent.event import Event

from msrplib.connect import MSRPServer, MSRPBindSessionTimeout
from msrplib.protocol import URI
from msrplib.session import GreenMSRPSession, MSRPSession


def main():
    kind, attacker = sys.argv[1], URI.parse(sys.argv[2])
    MSRPBindSessionTimeout.seconds = 30
    server = MSRPServer()
    [local] = server.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
    print(local, flush=True)
    transport = server.complete([attacker])
    print('bound', flush=True)
    ended = Event()
    stuck = Event()  # never set: the application is stuck in its callback

    def on_incoming(chunk=None, error=None):
        if error is not None:
            print('ended %s' % error.getErrorMessage(), flush=True)
            ended.set()
            return
        stuck.wait()

    if kind == 'green':
        session = GreenMSRPSession(transport)  # receive_chunk() is never called

        def watch():
            session.reader_job.join()
            print('ended', flush=True)
            ended.set()
        gevent.spawn(watch)
    elif kind == 'callback':
        session = MSRPSession(transport, on_incoming_cb=on_incoming)
    else:
        raise SystemExit('unknown kind %r' % kind)
    ended.wait()
    sys.stdout.flush()


if __name__ == '__main__':
    main()
