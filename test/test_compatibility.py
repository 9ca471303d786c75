"""doc/compatibility.md stays true: every row of its table is checked against the library and the suite.

- A first column that is a dotted name in backticks is looked up: it must
  exist for ``same``/``different`` rows and must not for ``missing`` ones.
- A "checked by" cell ``file.py::test_name`` must name a test function that
  exists in test/ (the suite runs it).
- ``gnutls-credentials``: a duck-typed GnuTLS-style credentials object
  (``.cert``/``.key``/``.trusted`` with ``export()``, ``.verify_peer``) must
  be accepted by msrplib.tls (server and client contexts).
"""

import ast
import importlib
import os
import re

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, os.pardir, 'doc', 'compatibility.md')
STATUSES = ('same', 'different', 'missing')


def table_rows():
    """The rows of the compatibility table: (line number, [cells])."""
    rows = []
    with open(DOC, encoding='utf-8') as f:
        lines = f.read().splitlines()
    in_table = False
    for number, line in enumerate(lines, 1):
        if line.startswith('| classic name or behaviour |'):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith('|'):
            break
        if set(line.replace('|', '').strip()) <= set('- '):
            continue  # the separator line
        cells = [cell.strip() for cell in line.strip()[1:-1].split('|')]  # (no cell holds a '|')
        rows.append((number, cells))
    return rows


ROWS = table_rows()


def row_id(row):
    return 'line%d' % row[0]


def dotted_name(cell):
    match = re.fullmatch(r'`(msrplib(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`', cell)
    return match.group(1) if match else None


def resolve(name):
    """The object a dotted name names (the longest importable module prefix, then attributes); raises LookupError."""
    parts = name.split('.')
    for split in range(len(parts), 0, -1):
        try:
            value = importlib.import_module('.'.join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            try:
                value = getattr(value, attribute)
            except AttributeError:
                raise LookupError('%s has no %s' % ('.'.join(parts[:split]), attribute))
        return value
    raise LookupError('cannot import %s' % name)


def is_resolvable(name):
    try:
        resolve(name)
    except LookupError:
        return False
    return True


def test_the_table_is_there_and_well_formed():
    assert len(ROWS) >= 40
    for number, cells in ROWS:
        assert len(cells) == 4, 'line %d: %r' % (number, cells)
        assert cells[1] in STATUSES, 'line %d: unknown status %r' % (number, cells[1])
        if cells[1] in ('different', 'missing'):
            assert cells[2], 'line %d: a %s row must say how or why' % (number, cells[1])
        assert cells[3], 'line %d: every row is checked by something' % number
        if cells[3] == 'name':
            assert dotted_name(cells[0]), 'line %d: "name" check without a dotted name' % number


@pytest.mark.parametrize('row', ROWS, ids=row_id)
def test_row(row):
    number, (thing, status, how, check) = row
    name = dotted_name(thing)
    if name is not None:
        if status == 'missing':
            assert not is_resolvable(name), 'line %d: %s exists now: update the row' % (number, name)
        else:
            resolve(name)
    if check == 'name':
        assert name is not None
    elif check == 'gnutls-credentials':
        check_gnutls_credentials(number, status)
    else:
        check_test_reference(number, check)


def check_test_reference(number, check):
    match = re.fullmatch(r'(test_[a-z0-9_]+\.py)::(test_[A-Za-z0-9_]+)', check)
    assert match, 'line %d: bad "checked by" cell %r' % (number, check)
    path = os.path.join(HERE, match.group(1))
    assert os.path.exists(path), 'line %d: no test file %s' % (number, match.group(1))
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert match.group(2) in functions, 'line %d: %s has no %s' % (number, match.group(1), match.group(2))


class _Exported:
    """A GnuTLS-style certificate or key: ``export()`` gives its PEM."""

    def __init__(self, pem):
        self._pem = pem

    def export(self):
        return self._pem


class _GnuTLSStyleCredentials:
    """What a SIP SIMPLE client passes as credentials (duck-typed; gnutls is never imported)."""

    def __init__(self, cert_pem, key_pem, trusted=(), verify_peer=False):
        self.cert = _Exported(cert_pem)
        self.key = _Exported(key_pem)
        self.trusted = [_Exported(pem) for pem in trusted]
        self.verify_peer = verify_peer


def check_gnutls_credentials(number, status):
    assert status == 'same', 'line %d: the GnuTLS-style credentials row is checked as "same"' % number
    from msrplib import tls
    own = tls.TLSCredentials.ephemeral()
    credentials = _GnuTLSStyleCredentials(own.cert_pem.decode('ascii'), own.key_pem.decode('ascii'))
    tls.server_context(credentials)  # raise (TypeError before GnuTLS-style support) if refused
    tls.client_context(credentials)
