"""The README's main job and the two-terminal examples, run as a user runs them."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


def run(*args, timeout=60, **kwargs):
    return subprocess.run([sys.executable] + list(args), cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.mark.parametrize('options', [[], ['--tls'], ['--host', '::1', '--size', '100000']])
def test_demo_talks_msrp_and_reports_ok(options):
    result = run('-m', 'msrplib', 'demo', *options)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'result:          OK' in out
    assert 'MSRP ' in out and ' SEND\n' in out and ' 200 OK\n' in out  # the wire log shows real chunks
    assert 'REPORT' in out and 'Status: 000 200 OK' in out
    assert ("alice received:  'Hello Alice, are you there?'") in out
    if '--tls' in options:
        assert 'msrps://' in out


def test_python_m_msrplib_without_arguments_runs_the_demo():
    result = run('-m', 'msrplib')
    assert result.returncode == 0, result.stderr
    assert 'result:          OK' in result.stdout


def test_decode_prints_rfc4975_example():
    result = run('-m', 'msrplib', 'decode')
    assert result.returncode == 0
    assert 'Hey Bob, are you there?' in result.stdout
    assert 'ByteRange(start=1, end=25, total=25)' in result.stdout


def test_hello_examples_chat_across_two_processes():
    accept = subprocess.Popen([sys.executable, 'examples/hello_accept.py'], cwd=ROOT, env=ENV, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    connect = None
    try:
        line = accept.stdout.readline()
        assert line.startswith('My path: msrp://'), line
        accept_path = line.split(' ', 2)[2].strip()
        connect = subprocess.Popen([sys.executable, 'examples/hello_connect.py', accept_path, 'hi', 'there'],
                                   cwd=ROOT, env=ENV, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        line = connect.stdout.readline()
        assert line.startswith('My path: msrp://'), line
        accept.stdin.write(line.split(' ', 2)[2])
        accept.stdin.flush()
        connect.stdin.write('\n')
        connect.stdin.flush()
        connect_out, _ = connect.communicate(timeout=30)
        accept_out, _ = accept.communicate(timeout=30)
    finally:
        for process in (accept, connect):
            if process is not None and process.poll() is None:
                process.kill()
    assert 'answer: you said: hi' in connect_out
    assert 'answer: you said: there' in connect_out
    assert 'received: hi' in accept_out and 'received: there' in accept_out
    assert 'Connection closed: Connection was closed cleanly.' in accept_out
