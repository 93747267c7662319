"""What the SQL stores (:mod:`backends.sqlite`, :mod:`backends.postgres`) share.

Each engine keeps only its statements and its connection handling; the decisions live here,
once: :mod:`~backends.sql.codec` (records to and from rows, one JSON codec),
:mod:`~backends.sql.decide` (the compare-and-set of ``Store.apply``, pure),
:mod:`~backends.sql.dialect` (how an engine spells parameters and lists),
:mod:`~backends.sql.reads` (the read half of the Store port, over two primitives),
:mod:`~backends.sql.writes` (the rows a write stores, encoded before anything is written) and
:mod:`~backends.sql.store` (``SqlStore``: the whole port, over a few engine primitives).
"""
