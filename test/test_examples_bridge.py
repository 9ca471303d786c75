"""examples/asyncio_chat.py, twisted_chat.py and threaded_send.py against a real ``msrp listen``.

Each example runs as a user runs it -- a subprocess given the path the
listener printed -- and must exit 0; the listener (a subprocess too) must
have printed both chat lines and saved the 10 MiB file, whose sha256 is the
one the example printed; the listener's replies (``--reply``) must have
reached the example (chat both ways).  Every wait is bounded (readline under
a selector timeout, ``run``/``communicate`` with ``timeout``).
"""

import hashlib
import os
import re
import selectors
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
REPLY = 'Hi back from the listener'
FILE_SIZE = 10 * 1024 * 1024

EXAMPLES = {
    'asyncio_chat.py': ['Hello from asyncio', 'Here comes a file'],
    'twisted_chat.py': ['Hello from Twisted', 'Here comes a file'],
    'threaded_send.py': ['Hello from a thread', 'Here comes a file'],
}


def readline_within(proc, seconds):
    """The next line of ``proc.stdout`` (text), or '' when none came within ``seconds``."""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(seconds):
            return ''
    return proc.stdout.readline()


@pytest.fixture
def listener(tmp_path):
    """A ``msrp listen --count 3 --reply REPLY`` subprocess saving into tmp_path; yields (proc, its path)."""
    proc = subprocess.Popen([sys.executable, '-m', 'msrplib', 'listen', '--save-dir', str(tmp_path), '--count', '3',
                             '--reply', REPLY], cwd=str(tmp_path), env=ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = readline_within(proc, 20)
        assert line.startswith('path: msrp://'), (line, proc.poll())
        yield proc, line.split(':', 1)[1].strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_threaded_example_imports_no_gevent():
    with open(os.path.join(ROOT, 'examples', 'threaded_send.py')) as f:
        code = f.read()
    assert 'import gevent' not in code and 'from gevent' not in code


@pytest.mark.parametrize('example', sorted(EXAMPLES))
def test_example_chats_both_ways_and_sends_a_confirmed_file(example, listener, tmp_path):
    if example == 'twisted_chat.py':
        pytest.importorskip('twisted')
    proc, path = listener
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'examples', example), path], cwd=str(tmp_path),
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = EXAMPLES[example]
    for line in lines:
        assert 'confirmed: %s\n' % line in result.stdout
    assert result.stdout.count('listener says: %s\n' % REPLY) == len(lines), result.stdout     # both ways
    assert 'file: 100%% (%d of %d bytes)' % (FILE_SIZE, FILE_SIZE) in result.stderr              # progress
    sha256 = re.search(r'confirmed: file of %d bytes, sha256 ([0-9a-f]{64})' % FILE_SIZE, result.stdout).group(1)

    out, err = proc.communicate(timeout=30)       # --count 3: it exits once it has both lines and the file
    assert proc.returncode == 0, err
    for line in lines:
        assert re.search(r'^message from msrp://\S+: %s$' % re.escape(line), out, re.M), out
    saved = re.search(r'^saved (.+) \(%d bytes, sha-1 ok\)$' % FILE_SIZE, out, re.M)
    assert saved, out
    with open(saved.group(1), 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha256
