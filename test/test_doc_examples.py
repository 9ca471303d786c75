"""Every ```python block of doc/*.md and README.md runs, so the documentation cannot drift from the code.

Each page runs in its own subprocess (``python test/test_doc_examples.py
PAGE``), its blocks in order in one namespace, from an empty temporary
directory (an example must not depend on the directory it is run from),
under :data:`PAGE_TIMEOUT`.  A block whose lines start with ``>>>`` is run as
a doctest (its output is compared); any other block is executed and must
not raise.  A failure names the page, the block number and the page line.

A page steers the run with HTML comments (invisible when the page is
rendered).  Each applies to the next ```python block (cleanup: to the one before):

``<!-- doc-test: setup`` ... ``-->``
    Python run just before that block, in the same namespace: the objects a
    fragment assumes (a connected ``session``, a ``transport``...).
``<!-- doc-test: cleanup`` ... ``-->``
    Python run just after it.
``<!-- doc-test: skip REASON -->``
    The block is not run.  Only for what truly cannot run here (a real remote
    host); the reason is required and listed by :func:`test_skips_are_rare_and_explained`.

and these apply to the whole page, wherever they stand:

``<!-- doc-test: fixture listener -->``
    Starts ``python -m msrplib listen`` for the page; its path is the string
    ``listener_path``.  It is stopped when the page ends.
``<!-- doc-test: fixture loopback -->``
    ``loopback_transports()`` returns two connected, bound
    :class:`~msrplib.transport.MSRPTransport` s over 127.0.0.1 (for setups
    that need a ``transport`` or a ``session`` with a peer).
``<!-- doc-test: fixture kamailio -->``
    The page needs the Kamailio relay (msrplib.testing.KamailioRelay): skipped when Kamailio is
    not installed (failed under ``CI=true``).
"""

import doctest
import faulthandler
import glob
import os
import re
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAGE_TIMEOUT = 90    # seconds for a whole page (the relay page starts Kamailio)
BLOCK_TIMEOUT = 30   # seconds for one block: a hung example is dumped with its stack

_FENCE = re.compile(r'^(\s*)```+\s*([A-Za-z0-9_+-]*)')
_DIRECTIVE = re.compile(r'^\s*<!--\s*doc-test:\s*(\w+)(.*)$')
FIXTURES = ('listener', 'kamailio', 'loopback')


class Block:
    """One piece of Python of a page: a visible ```python block or a hidden setup/cleanup comment."""

    def __init__(self, kind, number, line, code):
        self.kind = kind        # 'block', 'setup' or 'cleanup'
        self.number = number    # the number of the visible block it belongs to (1-based)
        self.line = line        # page line of the first line of code
        self.code = code
        self.skip = None        # the reason, for a skipped block

    def where(self, page):
        what = 'block %d' % self.number if self.kind == 'block' else '%s of block %d' % (self.kind, self.number)
        return '%s %s (line %d)' % (page, what, self.line)


class PageError(Exception):
    """A page's doc-test comments are malformed."""


def parse_page(path):
    """Return ``(blocks, fixtures)`` of the page at ``path``: :class:`Block` s in run order, fixture names."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    blocks = []
    fixtures = []
    pending = []          # setup blocks and skip reasons waiting for the next python block
    skip = None
    number = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _DIRECTIVE.match(line)
        fence = _FENCE.match(line)
        if directive:
            name, rest = directive.group(1), directive.group(2)
            if name in ('setup', 'cleanup'):
                start = index + 1
                end = start
                while end < len(lines) and lines[end].strip() != '-->':
                    end += 1
                if end == len(lines):
                    raise PageError('%s:%d: doc-test %s comment is not closed by a "-->" line'
                                    % (path, index + 1, name))
                if name == 'setup':
                    pending.append(Block(name, number + 1, start + 1, '\n'.join(lines[start:end])))
                elif not blocks or pending or skip:
                    raise PageError('%s:%d: doc-test cleanup must follow a python block' % (path, index + 1))
                else:
                    block = Block(name, number, start + 1, '\n'.join(lines[start:end]))
                    block.skip = blocks[-1].skip
                    blocks.append(block)
                index = end + 1
                continue
            rest = rest.strip()
            if not rest.endswith('-->'):
                raise PageError('%s:%d: doc-test %s comment must end on its line with "-->"' % (path, index + 1, name))
            rest = rest[:-3].strip()
            if name == 'skip':
                if not rest:
                    raise PageError('%s:%d: doc-test skip needs a reason' % (path, index + 1))
                skip = rest
            elif name == 'fixture':
                for fixture in rest.split():
                    if fixture not in FIXTURES:
                        raise PageError('%s:%d: unknown doc-test fixture %r (known: %s)'
                                        % (path, index + 1, fixture, ', '.join(FIXTURES)))
                    fixtures.append(fixture)
            else:
                raise PageError('%s:%d: unknown doc-test directive %r' % (path, index + 1, name))
            index += 1
            continue
        if fence:
            indent, language = fence.group(1), fence.group(2).lower()
            end = index + 1
            while end < len(lines) and not re.match(r'^\s*```', lines[end]):
                end += 1
            if language == 'python':
                number += 1
                body = [text[len(indent):] if text.startswith(indent) else text.lstrip()
                        for text in lines[index + 1:end]]
                block = Block('block', number, index + 2, '\n'.join(body))
                block.skip = skip
                for setup in pending:
                    setup.skip = skip
                    setup.number = number
                blocks.extend(pending + [block])
                pending, skip = [], None
            elif pending or skip:
                raise PageError('%s:%d: a doc-test comment is followed by a %r block, not a python one'
                                % (path, index + 1, language or 'plain'))
            index = end + 1
            continue
        index += 1
    if pending or skip:
        raise PageError('%s: a doc-test comment at the end is not followed by a python block' % (path,))
    return blocks, fixtures


# ---------------------------------------------------------------------------
# Running one page (in the subprocess)


def _start_listener(namespace):
    process = subprocess.Popen([sys.executable, '-m', 'msrplib', 'listen', '--save-dir', os.getcwd()],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith('path: '):
        process.kill()
        raise RuntimeError('the listener fixture printed %r instead of its path' % (line,))
    namespace['listener_path'] = line[len('path: '):].strip()
    return process


def loopback_transports():
    """Two connected, bound transports over loopback (the ``loopback`` fixture)."""
    import gevent
    from msrplib.connect import AcceptorDirect, ConnectorDirect
    from msrplib.protocol import URI
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    try:
        with gevent.Timeout(10):
            answer = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
            offer = connector.prepare(URI(host='127.0.0.1', use_tls=False))
            accepting = gevent.spawn(acceptor.complete, offer)
            near = connector.complete(answer)
            return near, accepting.get()
    finally:
        acceptor.cleanup()
        connector.cleanup()


def _run_block(page, block, namespace):
    if re.match(r'\s*>>>', block.code):
        parser = doctest.DocTestParser()
        test = parser.get_doctest(block.code, namespace, block.where(page), page, block.line - 1)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test, clear_globs=False)
        namespace.update(test.globs)   # DocTest works on a copy: later blocks see what this one defined
        if runner.failures:
            raise AssertionError('%d doctest example(s) failed (output above)' % runner.failures)
        return
    # line numbers of the compiled code are the page's: tracebacks point into the page
    code = compile('\n' * (block.line - 1) + block.code, page, 'exec')
    exec(code, namespace)


def run_page(page):
    """Run the python blocks of ``page`` (a path relative to the repository root); return the exit status."""
    blocks, fixtures = parse_page(os.path.join(ROOT, page))
    namespace = {'__name__': '__doc_example__'}
    processes = []
    if 'loopback' in fixtures:
        namespace['loopback_transports'] = loopback_transports
    if 'listener' in fixtures:
        processes.append(_start_listener(namespace))
    try:
        for block in blocks:
            if block.skip is not None:
                continue
            faulthandler.dump_traceback_later(BLOCK_TIMEOUT, exit=True)
            try:
                _run_block(page, block, namespace)
            except BaseException:
                sys.stdout.flush()
                sys.stderr.write('DOC EXAMPLE FAILED: %s\n' % block.where(page))
                traceback.print_exc()
                return 1
            finally:
                faulthandler.cancel_dump_traceback_later()
    finally:
        for process in processes:
            process.kill()
            process.wait()
    return 0


# ---------------------------------------------------------------------------
# The tests (pytest)


def pages():
    """Every documentation page with Python in it, relative to the repository root."""
    found = sorted(os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, 'doc', '*.md')))
    return found + ['README.md']


def _kamailio_available():
    from msrplib.testing.kamailio import kamailio_available
    return kamailio_available()


def run_page_in_subprocess(page, root=ROOT):
    """Run ``page`` in a fresh interpreter from an empty directory; return the CompletedProcess."""
    env = dict(os.environ)
    env['PYTHONPATH'] = root + os.pathsep + env.get('PYTHONPATH', '')
    env['PYTHONUNBUFFERED'] = '1'
    with tempfile.TemporaryDirectory() as directory:
        return subprocess.run([sys.executable, os.path.abspath(__file__), page], cwd=directory, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PAGE_TIMEOUT)


def _page_params():
    import pytest
    return [pytest.param(page, id=page) for page in pages()]


if __name__ != '__main__':
    import pytest

    @pytest.mark.parametrize('page', _page_params())
    def test_doc_page_examples_run(page):
        blocks, fixtures = parse_page(os.path.join(ROOT, page))
        if not any(block.kind == 'block' for block in blocks):
            pytest.skip('no python block')
        if 'kamailio' in fixtures and not _kamailio_available():
            if os.environ.get('CI') == 'true':
                pytest.fail('Kamailio with the msrp module is required when CI=true (run test/relay/install.sh)')
            pytest.skip('%s needs Kamailio with the msrp module (run test/relay/install.sh)' % page)
        result = run_page_in_subprocess(page)
        assert result.returncode == 0, 'examples of %s failed:\n%s%s' % (page, result.stdout[-3000:],
                                                                          result.stderr[-6000:])

    def test_every_python_block_is_found():
        # the page with the most blocks: none is lost by the parser (fences, indentation)
        text = open(os.path.join(ROOT, 'doc', 'session.md'), encoding='utf-8').read()
        blocks, _ = parse_page(os.path.join(ROOT, 'doc', 'session.md'))
        assert sum(block.kind == 'block' for block in blocks) == len(re.findall(r'^\s*```python', text, re.M))

    def test_skips_are_rare_and_explained():
        skipped = []
        total = 0
        for page in pages():
            blocks, _ = parse_page(os.path.join(ROOT, page))
            for block in blocks:
                if block.kind == 'block':
                    total += 1
                    if block.skip is not None:
                        skipped.append('%s: %s' % (block.where(page), block.skip))
        assert total >= 38
        assert len(skipped) <= 3, 'too many doc examples are not run:\n' + '\n'.join(skipped)

    def test_a_failing_block_is_reported_with_page_block_and_line(tmp_path):
        # the runner itself: a page whose second block raises fails, naming the block and the page line
        doc = tmp_path / 'doc'
        doc.mkdir()
        (doc / 'broken.md').write_text('# Broken\n\n```python\nx = 1\n```\n\ntext\n\n'
                                       '<!-- doc-test: setup\ny = 2\n-->\n```python\nassert x + y == 3\n'
                                       'undefined_name\n```\n')
        tests = tmp_path / 'test'
        tests.mkdir()
        with open(os.path.abspath(__file__), encoding='utf-8') as f:
            (tests / 'test_doc_examples.py').write_text(f.read())
        env = dict(os.environ, PYTHONPATH=ROOT)
        result = subprocess.run([sys.executable, str(tests / 'test_doc_examples.py'), 'doc/broken.md'],
                                cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=PAGE_TIMEOUT)
        assert result.returncode == 1
        assert 'DOC EXAMPLE FAILED: doc/broken.md block 2 (line 13)' in result.stderr
        assert 'line 14' in result.stderr and "NameError: name 'undefined_name'" in result.stderr

    def test_a_failing_doctest_is_reported(tmp_path):
        page = tmp_path / 'page.md'
        page.write_text('```python\n>>> 1 + 1\n3\n```\n')
        blocks, _ = parse_page(str(page))
        namespace = {}
        with pytest.raises(AssertionError, match='1 doctest example'):
            _run_block('page.md', blocks[0], namespace)

    def test_malformed_directives_are_refused(tmp_path):
        page = tmp_path / 'page.md'
        for text, message in (('<!-- doc-test: skip -->\n```python\npass\n```\n', 'needs a reason'),
                              ('<!-- doc-test: fixture nosuch -->\n', 'unknown doc-test fixture'),
                              ('<!-- doc-test: setup\nx = 1\n', 'not closed'),
                              ('<!-- doc-test: skip why -->\n```sh\nls\n```\n', 'not a python one')):
            page.write_text(text)
            with pytest.raises(PageError, match=message):
                parse_page(str(page))


if __name__ == '__main__':
    sys.exit(run_page(sys.argv[1]))
