"""The two implementations of MSRPParser's chunk scanning, for the tests that run under both.

``msrplib.protocol`` calls the C fast path (msrplib/_cparser.c) through two
module globals: ``_scan_chunks`` (None: pure Python) and ``_find_marker``
(``bytes.find`` without the extension).  :func:`select` sets both, so a test
can run the parser with the C path (``C_FUNCTIONS``) or without it
(``PURE_PYTHON``) in one process, whatever MSRPLIB_PURE_PYTHON said at import.
"""

import msrplib.protocol as protocol

PURE_PYTHON = (None, bytes.find)


def pure_python_requested():
    """True when the environment asks for the pure Python parser (as msrplib.protocol reads it)."""
    return protocol._pure_python_requested()


def _load_c_functions():
    # (scan_chunks, find) of the extension, configured as msrplib.protocol configures it, and the
    # ImportError text when it cannot be imported
    if protocol._scan_chunks is not None:
        return (protocol._scan_chunks, protocol._find_marker), None
    try:
        import msrplib._cparser  # noqa: F401
    except ImportError as e:
        return None, '%s: %s' % (type(e).__name__, e)
    # built but disabled by MSRPLIB_PURE_PYTHON: loaded and configured as the module does when not disabled
    functions = protocol._load_cparser()
    assert functions[0] is not None, 'msrplib.protocol._load_cparser() did not load msrplib._cparser'
    return functions, None


#: (scan_chunks, find) of msrplib._cparser, or None when the extension cannot be imported
C_FUNCTIONS, C_IMPORT_ERROR = _load_c_functions()


def current():
    """The functions msrplib.protocol uses now, as a pair that :func:`select` takes."""
    return protocol._scan_chunks, protocol._find_marker


def select(functions):
    """Make msrplib.protocol use ``functions`` (``C_FUNCTIONS`` or ``PURE_PYTHON``); return the previous pair."""
    previous = current()
    protocol._scan_chunks, protocol._find_marker = functions
    return previous
