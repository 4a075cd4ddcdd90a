"""The harness that runs a local changewatch stack for the tests, the demo and the benchmarks.

``process``: start, wait for and stop child processes; ``services``: the machine's Redis
and Postgres, moto's S3 server and real workers; ``faults``: private services and ways
to break them.
"""
