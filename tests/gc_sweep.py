"""Collecting a test's garbage at once, after it has run whole, outside any other work.

Why: aiormq leaves futures holding an exception no one retrieved in reference cycles when a
broker goes away under a call in flight (the cluster tests kill and cut nodes; the playbook
tests stop the brokers and daemons they started), and the records pytest captured keep more
alive until the item's reports are made. Collected later, such a future's finalizer logs its
exception, and formatting the traceback parses source lines (Python 3.11 does, for the
carets). If that collection runs inside another ``ast.parse``, the outer parse fails with
``SystemError: AST constructor recursion depth mismatch`` (python/cpython#106905): pytest
importing hypothesis through its assertion rewriter after the last test crashed runs whose
tests had all passed (the cluster session twice, the playbook session once).
"""

from __future__ import annotations

import gc


def sweep() -> None:
    """Collect until nothing is left, at most five passes (as pytest makes at its end: a
    finalizer may leave new garbage)."""
    for _ in range(5):
        if not gc.collect():
            break
