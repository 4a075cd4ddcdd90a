"""changewatch's demo: one person's photo sessions through the real pipeline, end to end.

It takes the same path a production job takes: photos uploaded to S3, jobs enqueued
with the producer, a real Celery worker embedding them with ResNet50, results read back
from Postgres. By default it uses its own database, its own Redis databases and
(unless AWS_ENDPOINT_URL_S3 names one) its own S3 server, so it touches no other data.
It reports how much each session differs from the earlier ones, in neutral words; it
never says what a change means.

Run it through ``scripts/demo.sh [PHOTO_FOLDER]``, which installs and starts services first
(``python -m bench.demo``). ``config``: the command line and the environment; ``photos``:
the sessions it sends; ``run``: the stack and the jobs; ``report``: what it prints.
"""
