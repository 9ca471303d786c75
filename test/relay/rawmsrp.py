"""Hand-written MSRP over raw sockets, for probing a relay from outside.

Deliberately independent of msrplib's protocol code (it only needs to be
right for the frames the probe and test_relay_server.py send): frames are
built with string formatting and read back by searching for the end-line.
Every socket has a timeout, so nothing here blocks forever.
"""

import os
import socket
import ssl
import sys

CRLF = '\r\n'


def new_id(nbytes=8):
    """Random alphanumeric id (hex): transaction ids, session ids."""
    return os.urandom(nbytes).hex()


class Frame:
    """A parsed MSRP frame: request (method set) or response (code set)."""

    def __init__(self, raw, tid, method=None, code=None, comment=None,
                 headers=None, body=b'', flag='$'):
        self.raw = raw
        self.tid = tid
        self.method = method
        self.code = code
        self.comment = comment
        self.headers = headers or []
        self.body = body
        self.flag = flag

    def header(self, name, default=None):
        """Value of the first header called `name` (case-insensitive)."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return default

    def path(self, name):
        """A To-Path/From-Path/Use-Path header split into URIs."""
        value = self.header(name)
        return value.split() if value else []

    def __repr__(self):
        what = self.method if self.method else '%s %s' % (self.code, self.comment)
        return '<Frame %s %s>' % (self.tid, what)


def parse_frame(raw):
    """Parse one complete frame (bytes, including its end-line)."""
    head_end = raw.index(b'\r\n')
    first = raw[:head_end].decode('utf-8')
    parts = first.split(' ', 3)
    if parts[0] != 'MSRP' or len(parts) < 3:
        raise ValueError('bad start line %r' % first)
    tid = parts[1]
    endline = b'-------' + tid.encode()
    end_at = raw.rindex(endline)
    flag = raw[end_at + len(endline):end_at + len(endline) + 1].decode()
    inner = raw[head_end + 2:end_at]            # headers [+ blank + body + CRLF]
    if b'\r\n\r\n' in inner:
        hdr_blob, body = inner.split(b'\r\n\r\n', 1)
        body = body[:-2] if body.endswith(b'\r\n') else body
    else:
        hdr_blob, body = inner.rstrip(b'\r\n'), b''
    headers = []
    for line in hdr_blob.decode('utf-8').split('\r\n'):
        if line:
            key, _, value = line.partition(':')
            headers.append((key.strip(), value.strip()))
    method = code = comment = None
    if parts[2].isdigit() and len(parts[2]) == 3:
        code = int(parts[2])
        comment = ' '.join(parts[3:]) if len(parts) > 3 else ''
    else:
        method = parts[2]
    return Frame(raw, tid, method, code, comment, headers, body, flag)


def build_frame(tid, method, headers, body=None, content_type='text/plain',
                flag='$'):
    """Build a request: `headers` is a list of (name, value) pairs in order
    (To-Path and From-Path first)."""
    lines = ['MSRP %s %s' % (tid, method)]
    lines += ['%s: %s' % (k, v) for k, v in headers]
    out = (CRLF.join(lines) + CRLF).encode('utf-8')
    if body is not None:
        out += ('Content-Type: %s' % content_type).encode() + b'\r\n\r\n'
        out += body + b'\r\n'
    out += ('-------%s%s' % (tid, flag)).encode() + b'\r\n'
    return out


def build_response(request, code, comment='OK', to_path=None, from_path=None,
                   extra=()):
    """Build a response to `request`. Default paths follow RFC 4975 7.2:
    SEND is answered hop by hop (To-Path = first From-Path URI)."""
    if to_path is None:
        fp = request.path('From-Path')
        to_path = fp[:1] if request.method == 'SEND' else fp
    if from_path is None:
        from_path = request.path('To-Path')[:1]
    lines = ['MSRP %s %03d %s' % (request.tid, code, comment),
             'To-Path: ' + ' '.join(to_path),
             'From-Path: ' + ' '.join(from_path)]
    lines += ['%s: %s' % (k, v) for k, v in extra]
    return (CRLF.join(lines) + CRLF + '-------%s$' % request.tid + CRLF).encode()


class RawClient:
    """One MSRP connection to a relay, with a wire log.

    `name` labels log lines; `log` is a callable taking one str (default:
    print to stdout) or None for silence.
    """

    def __init__(self, name, host, port, use_tls=False, ssl_context=None,
                 server_hostname='localhost', timeout=5.0, log=print):
        self.name = name
        self.timeout = timeout
        self.log = log
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(timeout)
        if use_tls:
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname)
            sock.settimeout(timeout)
        self.sock = sock
        self.use_tls = use_tls
        self.local_port = sock.getsockname()[1]
        self.session_id = new_id(10)
        scheme = 'msrps' if use_tls else 'msrp'
        self.uri = '%s://127.0.0.1:%d/%s;tcp' % (scheme, self.local_port,
                                                 self.session_id)
        self.buf = b''
        self.use_path = None
        self.expires = None

    # -- wire -----------------------------------------------------------

    def _log(self, direction, data):
        if self.log is None:
            return
        text = data.decode('utf-8', 'replace')
        self.log('---- %s %s %d bytes ----\n%s' % (self.name, direction,
                                                   len(data), text))

    def send(self, data):
        self._log('SENT', data)
        self.sock.sendall(data)

    def recv_frame(self, timeout=None):
        """Read one frame; raises socket.timeout / ConnectionError."""
        self.sock.settimeout(timeout or self.timeout)
        while True:
            frame = self._take_frame()
            if frame is not None:
                self._log('RECEIVED', frame.raw)
                return frame
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError('%s: connection closed by relay'
                                      % self.name)
            self.buf += data

    def _take_frame(self):
        nl = self.buf.find(b'\r\n')
        if nl < 0:
            return None
        first = self.buf[:nl].split(b' ')
        if len(first) < 3 or first[0] != b'MSRP':
            raise ValueError('%s: garbage from relay: %r'
                             % (self.name, self.buf[:80]))
        tid = first[1]
        needle = b'\r\n-------' + tid
        pos = nl
        while True:
            at = self.buf.find(needle, pos)
            if at < 0:
                return None
            tail = at + len(needle)
            if len(self.buf) < tail + 3:
                return None
            if (self.buf[tail:tail + 1] in (b'$', b'+', b'#')
                    and self.buf[tail + 1:tail + 3] == b'\r\n'):
                raw = self.buf[:tail + 3]
                self.buf = self.buf[tail + 3:]
                return parse_frame(raw)
            pos = at + 1

    def expect_closed(self, timeout=None):
        """True when the peer closes/resets the connection within timeout."""
        self.sock.settimeout(timeout or self.timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            if isinstance(exc, socket.timeout):
                return False
            return True
        return data == b''

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- requests ---------------------------------------------------------

    def auth(self, relay_uri, extra=()):
        """Send AUTH to relay_uri and return (tid, response frame)."""
        tid = new_id()
        headers = [('To-Path', relay_uri), ('From-Path', self.uri)]
        headers += list(extra)
        self.send(build_frame(tid, 'AUTH', headers))
        return tid, self.recv_frame()

    def authenticate(self, relay_uri, username, password, expires=None,
                     digest=None):
        """Full AUTH dance: 401, then AUTH with Authorization.

        Returns (first response, second response).  Sets use_path/expires
        on a 200.  `digest` is msrplib.digest (passed in so this module has
        no msrplib import).
        """
        _, challenge_frame = self.auth(relay_uri)
        if challenge_frame.code != 401:
            return challenge_frame, None
        challenge = digest.parse_challenge(
            challenge_frame.header('WWW-Authenticate'))
        authz = digest.make_authorization(challenge, username, password,
                                          'AUTH', relay_uri)
        extra = [('Authorization', authz)]
        if expires is not None:
            extra.append(('Expires', str(expires)))
        _, response = self.auth(relay_uri, extra)
        if response.code == 200:
            self.use_path = response.path('Use-Path')
            self.expires = int(response.header('Expires'))
        return challenge_frame, response

    def send_message(self, to_path, body, message_id=None, extra=()):
        """Send one complete SEND chunk; returns (tid, message_id)."""
        tid = new_id()
        message_id = message_id or new_id()
        headers = [('To-Path', ' '.join(to_path)), ('From-Path', self.uri),
                   ('Message-ID', message_id), ('Success-Report', 'yes'),
                   ('Failure-Report', 'yes'),
                   ('Byte-Range', '1-%d/%d' % (len(body), len(body)))]
        headers += list(extra)
        self.send(build_frame(tid, 'SEND', headers, body))
        return tid, message_id

    def send_report(self, request, status='000 200 OK'):
        """REPORT for a received SEND back along its From-Path."""
        tid = new_id()
        total = len(request.body)
        headers = [('To-Path', ' '.join(request.path('From-Path'))),
                   ('From-Path', self.uri),
                   ('Message-ID', request.header('Message-ID')),
                   ('Byte-Range', '1-%d/%d' % (total, total)),
                   ('Status', status)]
        self.send(build_frame(tid, 'REPORT', headers))
        return tid


def stdout_log(text):
    sys.stdout.write(text + '\n')
    sys.stdout.flush()
