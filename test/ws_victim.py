"""The victim process of test/test_websocket_hostile.py: a session over WebSocket through a (hostile) relay.

    python test/ws_victim.py WS_URL USERNAME PASSWORD

It reserves a session at the relay over WebSocket (AcceptorRelay with
MSRPRelaySettings(ws_url=WS_URL)), prints its full path (space-separated
URIs) on stdout, accepts the binding of whoever addresses it, prints
``bound``, then runs a GreenMSRPSession whose application reads and drops
every chunk.  When the session ends it prints ``ended <reason>`` and exits.
The test measures its memory from outside (psutil).
"""

import sys

import gevent

from msrplib.connect import MSRPBindSessionTimeout
from msrplib.relay import AcceptorRelay, MSRPRelaySettings
from msrplib import MSRPError
from msrplib.session import GreenMSRPSession
from msrplib.transport import ConnectionClosed


def main():
    url, username, password = sys.argv[1:4]
    MSRPBindSessionTimeout.seconds = 30
    acceptor = AcceptorRelay(MSRPRelaySettings('example.com', username, password, ws_url=url))
    path = acceptor.prepare()
    print(' '.join(map(str, path)), flush=True)
    transport = acceptor.complete(None)
    print('bound', flush=True)
    session = GreenMSRPSession(transport)

    def read():
        try:
            while True:
                session.receive_chunk()
        except (ConnectionClosed, MSRPError):
            return
    reader = gevent.spawn(read)
    session.reader_job.join()
    reader.kill()
    print('ended %s' % (transport._closed,), flush=True)


if __name__ == '__main__':
    main()
