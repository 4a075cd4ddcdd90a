"""The contract the producer and the worker share, and neither owns.

The database's tables (plain SQL migrations, ``python -m changewatch.schema migrate``), the task
messages (``contract``), how they sit in Redis (``broker``), and the result objects read
back from the tables (``results``, ``evidence``, ``equipment``). The producer and the
worker both import from here; neither imports the other.
"""
