"""Several brokers, each person routed to one by user_id (schema/routing.py), end to end.

Two private Redis servers, one worker on each, a producer that knows both, all on their
own database: each person's jobs and notifications go to that person's broker, the
reaper reads both before it calls a job lost (and re-sends it to the right one), and
forget-user takes a person's messages from whichever broker holds them. The routing rule
is the contract's, and a Node.js sender computes the same (tests/node/broker_index.js).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench.harness.faults.redis_server import RedisServer
from bench.harness.process import wait_until
from bench.harness.services import Worker, free_port, recreate_database
from changewatch.producer import Producer
from changewatch.producer.admin import forget_user
from changewatch.producer.reaper import reap
from changewatch.schema.broker import Broker, broker
from changewatch.schema.contract import ANALYZE_TASK, NOTIFY_TASK, broker_index
from changewatch.schema.migrate import migrate
from changewatch.settings import Settings
from tests.conftest import SETTINGS
from tests.helpers import (
    ARTIFACTS,
    BUCKET,
    MAX_IMAGE_BYTES,
    NOTIFY_QUEUE,
    Uploader,
    require,
    series_sessions,
)

NODE_DIR = Path(__file__).parents[1] / "node"


def test_a_node_sender_routes_every_person_as_python_does() -> None:
    node = shutil.which("node")
    require(node is not None, "node is not installed (apt-get install nodejs npm)")
    ids = [str(uuid.uuid4()) for _ in range(300)] + [str(uuid.UUID(int=i)) for i in range(1, 40)]
    for count in (1, 2, 3, 7):
        out = subprocess.run(
            [str(node), "broker_index.js", json.dumps({"ids": ids, "count": count})],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(out.stdout) == [broker_index(i, count) for i in ids]


def test_a_worker_on_a_broker_no_person_is_routed_to_does_not_start() -> None:
    env = {
        "CHANGEWATCH_BROKERS": "redis://a:6379/0 redis://b:6379/0",
        "CHANGEWATCH_RESULT_BACKENDS": "redis://a:6379/1 redis://b:6379/1",
    }
    first = Settings.from_env(env)  # the first broker and its results, by default
    assert (first.broker_url, first.result_backend) == ("redis://a:6379/0", "redis://a:6379/1")
    second = Settings.from_env({**env, "CELERY_BROKER_URL": "redis://b:6379/0"})
    assert second.result_backend == "redis://b:6379/1"
    with pytest.raises(ValueError, match="not one of CHANGEWATCH_BROKERS"):
        Settings.from_env({**env, "CELERY_BROKER_URL": "redis://c:6379/0"})
    with pytest.raises(ValueError, match="pairs with this broker"):
        Settings.from_env(
            {
                **env,
                "CELERY_BROKER_URL": "redis://b:6379/0",
                "CELERY_RESULT_BACKEND": "redis://a:6379/1",
            }
        )
    with pytest.raises(ValueError, match="one per broker"):
        Settings.from_env({**env, "CHANGEWATCH_RESULT_BACKENDS": "redis://a:6379/1"})


def _jobs(held: Broker) -> set[str]:
    return {str(m.kwargs.get("session_id")) for _, m in held.queued() if m.task == ANALYZE_TASK}


def _notified(held: Broker) -> set[str]:
    """Users named by the notifications waiting on this broker's notify queue."""
    return {
        str(m.kwargs.get("user_id"))
        for _, m in held.queued([NOTIFY_QUEUE])
        if m.task == NOTIFY_TASK
    }


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    servers = (RedisServer(tmp_path / "a").start(), RedisServer(tmp_path / "b").start())
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def deployment(two_brokers: tuple[RedisServer, RedisServer]) -> Settings:
    """Both brokers, each with its results beside it, on a database of their own."""
    database_url = SETTINGS.database_url.rsplit("/", 1)[0] + "/changewatch_test_brokers"
    recreate_database(database_url)
    migrate(database_url)
    a, b = (server.url() for server in two_brokers)
    results = tuple(server.url(1) for server in two_brokers)
    return replace(
        SETTINGS,
        broker_url=a,
        brokers=(a, b),
        result_backend=results[0],
        result_backends=results,
        database_url=database_url,
        notify_queue=NOTIFY_QUEUE,
    )


def test_each_person_s_messages_go_to_their_broker_and_every_job_ends(
    two_brokers: tuple[RedisServer, RedisServer],
    deployment: Settings,
    s3: object,
    uploader: Uploader,
    photos: Path,
) -> None:
    settings = deployment
    a, b = settings.brokers
    producer = Producer(settings)
    people: dict[int, list[uuid.UUID]] = {0: [], 1: []}
    while min(len(p) for p in people.values()) < 2:
        user = uuid.uuid4()
        if len(people[broker_index(user, 2)]) < 2:
            people[broker_index(user, 2)].append(user)
    session = series_sessions(photos)[0]
    sent: dict[uuid.UUID, str] = {}
    for user in people[0] + people[1]:
        sid = uuid.uuid4()
        producer.analyze(user, sid, "2026-03-01T08:00:00Z", uploader.session(user, session))
        sent[user] = str(sid)
    apps = producer.brokers.every()
    with broker(apps[0]) as on_a, broker(apps[1]) as on_b:
        assert _jobs(on_a) == {sent[u] for u in people[0]}
        assert _jobs(on_b) == {sent[u] for u in people[1]}
        # A message the broker lost: the reaper reads both brokers, so it re-sends this one
        # only, and to its person's broker.
        lost_user = people[1][0]
        key, message = next(
            (k, m) for k, m in on_b.queued() if m.kwargs.get("session_id") == sent[lost_user]
        )
        assert on_b.drop_queued(key, message) == 1
    done = reap(producer, older_than=0.0, confirm_after=0.2)
    assert done.sessions == [sent[lost_user]]
    with broker(apps[0]) as on_a, broker(apps[1]) as on_b:
        assert _jobs(on_a) == {sent[u] for u in people[0]}
        assert _jobs(on_b) == {sent[u] for u in people[1]}

    workers = [_worker(name, url, settings) for name, url in (("brokera", a), ("brokerb", b))]
    try:
        for worker, app in zip(workers, apps, strict=True):
            worker.wait_ready(app)
        for user, sid in sent.items():
            assert producer.wait(sid, timeout=240)["status"] == "succeeded", user
        with broker(apps[0]) as on_a, broker(apps[1]) as on_b:
            assert _jobs(on_a) == _jobs(on_b) == set()
            # One worker's relay sends them all (an advisory lock), each to its person's
            # broker, a moment after the job's commit.
            wait_until(
                lambda: _notified(on_a) | _notified(on_b) == {str(u) for u in sent},
                30,
                "the notifications were not sent",
            )
            assert _notified(on_a) == {str(u) for u in people[0]}
            assert _notified(on_b) == {str(u) for u in people[1]}
        # Each broker's workers stored their people's results beside it.
        forgotten = people[1][1]
        assert _results_naming(two_brokers[1], forgotten) > 0
        assert _results_naming(two_brokers[0], forgotten) == 0
        # forget-user takes the person's unread notification from their broker, and
        # their results from its result backend.
        gone = forget_user(producer, str(forgotten), delete_objects=False)
        assert gone["remaining"]["messages"] == gone["remaining"]["results"] == 0
        assert _results_naming(two_brokers[1], forgotten) == 0
        with broker(apps[1]) as on_b:
            assert _notified(on_b) == {str(people[1][0])}
    finally:
        for worker in workers:
            worker.stop()
        producer.brokers.close()


def _results_naming(server: RedisServer, user: uuid.UUID) -> int:
    """Celery results in this server's result database that name the person."""
    client = server.client(1)
    return sum(str(user).encode() in (client.get(k) or b"") for k in client.scan_iter("celery-*"))


def _person_on(index: int, brokers: int = 2) -> uuid.UUID:
    """A new person whom the routing rule sends to broker ``index`` of ``brokers``."""
    return next(u for u in iter(uuid.uuid4, None) if broker_index(u, brokers) == index)


def _worker(name: str, broker_url: str, settings: Settings) -> Worker:
    ARTIFACTS.mkdir(exist_ok=True)
    return Worker(
        env={
            "CELERY_BROKER_URL": broker_url,
            "CHANGEWATCH_BROKERS": " ".join(settings.brokers),
            "CHANGEWATCH_RESULT_BACKENDS": " ".join(settings.result_backends),
            "CELERY_RESULT_BACKEND": "",  # its pair in CHANGEWATCH_RESULT_BACKENDS
            "DATABASE_URL": settings.database_url,
            "CHANGEWATCH_MODEL_WEIGHTS": "random",
            "CHANGEWATCH_DEVICE": "cpu",
            "CHANGEWATCH_WORKER_CONCURRENCY": "1",
            "CHANGEWATCH_METRICS_PORT": str(free_port()),
            "CHANGEWATCH_METRICS_ADDR": "127.0.0.1",
            "CHANGEWATCH_ALLOWED_BUCKETS": BUCKET,
            "CHANGEWATCH_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
            "CHANGEWATCH_NOTIFY_QUEUE": NOTIFY_QUEUE,
        },
        name=name,
        log_path=ARTIFACTS / f"worker-{name}.log",
    ).start()


def test_a_person_moved_to_another_broker_by_a_new_list_loses_no_job(
    deployment: Settings, s3: object, uploader: Uploader, photos: Path
) -> None:
    """Growing from one broker to two moves some people: a job sent before the change
    waits on the old broker, the next on the new one. The reaper sees both alive, both
    end, and the scores are the history's whatever order the two workers took them in."""
    a, b = deployment.brokers
    results = deployment.result_backends
    before = replace(deployment, brokers=(a,), result_backends=(results[0],))
    user = _person_on(1)  # moves to b
    first, second = series_sessions(photos)[:2]
    old, new = Producer(before), Producer(deployment)
    sid1, sid2 = uuid.uuid4(), uuid.uuid4()
    old.analyze(user, sid1, "2026-03-01T08:00:00Z", uploader.session(user, first))
    new.analyze(user, sid2, "2026-03-29T08:00:00Z", uploader.session(user, second))
    apps = new.brokers.every()
    with broker(apps[0]) as on_a, broker(apps[1]) as on_b:
        assert (_jobs(on_a), _jobs(on_b)) == ({str(sid1)}, {str(sid2)})
    assert reap(new, older_than=0.0, confirm_after=0.2).sessions == []  # none lost
    workers = [_worker(name, url, deployment) for name, url in (("movea", a), ("moveb", b))]
    try:
        for worker, app in zip(workers, apps, strict=True):
            worker.wait_ready(app)
        for sid in (sid1, sid2):
            assert new.wait(sid, timeout=240)["status"] == "succeeded"
        # Whichever ran first, the later session's baseline is the earlier one.
        assert new.result(sid1)["is_first_session"] is True
        assert new.result(sid2)["baseline_session_count"] == 1
    finally:
        for worker in workers:
            worker.stop()
        old.brokers.close()
        new.brokers.close()


def test_a_job_left_on_a_removed_broker_is_sent_again_to_the_person_s_new_one(
    deployment: Settings, s3: object, uploader: Uploader, photos: Path
) -> None:
    """Shrinking from two brokers to one: a job still waiting on the removed broker,
    whose workers are gone, is lost to the new list. The reaper, which reads only the
    brokers it lists, sends it again to the person's broker under the new list, and it
    ends there; a job already on the kept broker is left alone."""
    a = deployment.brokers[0]
    results = deployment.result_backends
    after = replace(deployment, brokers=(a,), result_backends=(results[0],))
    stays, moves = _person_on(0), _person_on(1)
    session = series_sessions(photos)[0]
    old = Producer(deployment)
    sent = {user: uuid.uuid4() for user in (stays, moves)}
    for user, sid in sent.items():
        old.analyze(user, sid, "2026-03-01T08:00:00Z", uploader.session(user, session))
    new = Producer(after)
    try:
        done = reap(new, older_than=0.0, confirm_after=0.2)
        assert done.sessions == [str(sent[moves])]
        (on_a_app,) = new.brokers.every()
        with broker(on_a_app) as on_a:
            assert _jobs(on_a) == {str(sent[stays]), str(sent[moves])}
        worker = _worker("shrunk", a, after)
        try:
            worker.wait_ready(on_a_app)
            for user, sid in sent.items():
                assert new.wait(sid, timeout=240)["status"] == "succeeded", user
                assert new.result(sid)["is_first_session"] is True
        finally:
            worker.stop()
        # The removed broker still holds its copy: a worker started on it again would
        # repeat the job, which rewrites the same numbers (jobs are idempotent).
        with broker(old.brokers.every()[1]) as on_b:
            assert _jobs(on_b) == {str(sent[moves])}
    finally:
        old.brokers.close()
        new.brokers.close()
