"""``python -m msrplib``: command-line entry point.

``python -m msrplib demo [--tls] [--size BYTES]`` runs a live MSRP exchange
between two endpoints over loopback and prints the traffic (the default
command).  ``python -m msrplib decode`` parses RFC 4975's example exchange
from bytes and prints each chunk with its decoded headers.
``python -m msrplib listen|send|sendfile|chat ...`` is the ``msrp`` command
(:mod:`msrplib.cli`, doc/cli.md).
"""

import argparse
import sys

from msrplib import __version__
from msrplib.cli import _positive_float, _positive_int
from msrplib.protocol import MSRPParser, CHUNK_START, BODY, CHUNK_END

RFC4975_EXAMPLE = (
    b"MSRP a786hjs2 SEND\r\n"
    b"To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
    b"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
    b"Message-ID: 87652491\r\n"
    b"Byte-Range: 1-25/25\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hey Bob, are you there?\r\n"
    b"-------a786hjs2$\r\n"
    b"MSRP a786hjs2 200 OK\r\n"
    b"To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
    b"From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
    b"-------a786hjs2$\r\n"
)


def decode(data, out):
    """Parse ``data`` and print every chunk with its decoded headers to ``out``."""
    parser = MSRPParser()
    body = []
    for kind, value in parser.feed(data):
        if kind == CHUNK_START:
            chunk = value
            body = []
            out.write('%s\n' % chunk.first_line)
            for name, header in chunk.headers.items():
                out.write('    %-14s %r\n' % (name + ':', header.decoded))
        elif kind == BODY:
            body.append(value)
        elif kind == CHUNK_END:
            if body:
                out.write('    body: %r\n' % b''.join(body))
            out.write('    end: %s\n\n' % value)


CLI_COMMANDS = ('listen', 'send', 'sendfile', 'chat')


def main(argv=None):
    """Run the command line; returns the exit status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments and arguments[0] in CLI_COMMANDS:
        from msrplib.cli import main as cli_main
        return cli_main(arguments)
    parser = argparse.ArgumentParser(prog='python -m msrplib', description='msrplib %s' % __version__)
    commands = parser.add_subparsers(dest='command')
    demo = commands.add_parser('demo', help='a live chat and a large message between two endpoints on loopback')
    demo.add_argument('--tls', action='store_true', help='use msrps (TLS) with a fingerprint check')
    demo.add_argument('--size', type=_positive_int, default=3 * 1024 * 1024,
                      help='size of the large message in bytes (default %(default)s)')
    demo.add_argument('--host', default='127.0.0.1', help='loopback address to use (e.g. ::1)')
    demo.add_argument('--timeout', type=_positive_float, default=30.0,
                      help='seconds the whole demo may take (default %(default)s)')
    commands.add_parser('decode', help="parse RFC 4975's example exchange and print it")
    for name in CLI_COMMANDS:  # listed for --help; handled by msrplib.cli above
        commands.add_parser(name, help='the msrp command: python -m msrplib %s --help' % name)
    args = parser.parse_args(argv)
    if args.command == 'decode':
        decode(RFC4975_EXAMPLE, sys.stdout)
        return 0
    from msrplib.demo import run_demo
    if args.command is None:
        return _run(run_demo, sys.stdout)
    return _run(run_demo, sys.stdout, use_tls=args.tls, size=args.size, host=args.host, timeout=args.timeout)


def _run(run_demo, *args, **kwargs):
    # The demo's failures end it with one line on stderr and the msrp command's exit statuses, never a traceback.
    import gevent
    from msrplib import MSRPError
    from msrplib.cli import EXIT_CONNECT, EXIT_INTERRUPTED, EXIT_TRANSFER
    from msrplib.transport import ConnectionClosed
    try:
        return run_demo(*args, **kwargs)
    except MSRPError as e:
        sys.stderr.write('msrp: demo failed: %s\n' % (e,))
        return EXIT_CONNECT if not getattr(e, 'code', None) else EXIT_TRANSFER
    except (OSError, ConnectionClosed) as e:
        sys.stderr.write('msrp: demo failed: %s\n' % (e or type(e).__name__,))
        return EXIT_CONNECT
    except gevent.Timeout as e:
        sys.stderr.write('msrp: demo failed: it took longer than %s\n' % (e,))
        return EXIT_TRANSFER
    except KeyboardInterrupt:
        sys.stderr.write('msrp: interrupted\n')
        return EXIT_INTERRUPTED


if __name__ == '__main__':
    sys.exit(main())
