#!/usr/bin/env python3
"""The answering side of a two-terminal MSRP chat (run this first).

    terminal 1:  python examples/hello_accept.py
    terminal 2:  python examples/hello_connect.py <path printed by terminal 1>

This side listens (AcceptorDirect), prints its a=path, then reads the
connector's a=path from standard input -- the two steps SDP offer/answer
performs in a real call -- completes the connection, prints the messages it
receives and answers each one.
"""

import sys

from msrplib.connect import AcceptorDirect
from msrplib.protocol import URI
from msrplib.session import GreenMSRPSession
from msrplib.transport import ConnectionClosed


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else '127.0.0.1'
    acceptor = AcceptorDirect()
    local_path = acceptor.prepare(URI(host=host, port=0, use_tls=False))
    print('My path:', ' '.join(str(uri) for uri in local_path), flush=True)
    print("Paste the connector's path:", flush=True)
    remote_path = [URI.parse(text) for text in sys.stdin.readline().split()]
    try:
        transport = acceptor.complete(remote_path)
    finally:
        acceptor.cleanup()
    session = GreenMSRPSession(transport, accept_types=['text/plain'])
    print('Connected to', transport.getPeer().host, transport.getPeer().port, flush=True)
    try:
        while True:
            chunk = session.receive_chunk()
            if chunk.method != 'SEND':
                continue
            text = chunk.data.decode('utf-8', 'replace')
            print('received:', text, flush=True)
            session.deliver_message('you said: %s' % text, 'text/plain')
    except ConnectionClosed as e:
        print('Connection closed:', e, flush=True)


if __name__ == '__main__':
    main()
