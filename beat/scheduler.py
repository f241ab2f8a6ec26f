"""``WalrusScheduler``: a Celery beat scheduler whose timers live in Redis.

Why our own scheduler class rather than celery-redbeat: redbeat stores Celery schedule objects
and fires Celery tasks; our timers are walrus *messages* with rules of their own (quiet hours
in a timezone, ``once``, a heartbeat that skips while its last run goes, the last run id on the
entry), and the entries must be written by the gateway, which never imports beat. So the table
is plain JSON in Redis (:mod:`walrus_tasks.crons`), written by anyone, and this class only reads
it. It keeps redbeat's two ideas:

- **one firing beat**: a Redis lock (``walrus:beat:lock``, PX ``beat_lock_ttl``) renewed on
  every tick; other beats stand by and take over within that TTL when the holder dies;
- **a per-fire dedup key** as the second guard (:mod:`beat.timers`), so even two beats that
  both think they hold the lock fire a tick once.

The static entries of ``beat_schedule`` (the lease reaper) run through Celery's own
in-memory scheduling, and only on the beat that holds the lock.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis
from celery.beat import Scheduler
from redis.exceptions import LockError

from beat import timers
from walrus_tasks import ids, keys
from walrus_tasks.celery_app import REAP
from walrus_tasks.config import Config, load_config
from walrus_tasks.connection import get_redis
from walrus_tasks.errors import ConfigError
from walrus_tasks.settings import get_settings

log = logging.getLogger("walrus.beat")

MIN_TICK = 0.01
"""The shortest sleep between two ticks of the firing beat (seconds): a timer or static entry
is fired at most this late."""


class WalrusScheduler(Scheduler):  # type: ignore[misc]  # Celery is untyped
    """Celery's scheduler for the static entries, plus cron and heartbeats from Redis."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Set up the lock and load the config (a bad config stops beat at start-up)."""
        super().__init__(*args, **kwargs)
        self.settings = get_settings()
        self.redis = get_redis()
        self.name = f"beat-{ids.hex_id()[:8]}"
        self.lock = self.redis.lock(
            keys.BEAT_LOCK, timeout=self.settings.beat_lock_ttl, thread_local=False
        )
        self.holding = False
        self.config: Config = load_config(self.settings.home)
        self.generation = self._generation()
        self.next_config_check = 0.0

    def _generation(self) -> str | None:
        value: str | None = self.redis.get(keys.CONFIG_GENERATION)  # type: ignore[assignment]
        return value

    def _hold(self) -> bool:
        """Renew the lock if we hold it, else try to take it."""
        if self.holding:
            try:
                self.lock.reacquire()
                return True
            except LockError:
                log.warning("%s lost the beat lock; standing by", self.name)
                self.holding = False
        if self.lock.acquire(blocking=False):
            log.info("%s holds the beat lock: firing timers", self.name)
            self.holding = True
        return self.holding

    def _reload_if_asked(self, now: float) -> None:
        if now < self.next_config_check:
            return
        self.next_config_check = now + self.settings.config_poll
        generation = self._generation()
        if generation == self.generation:
            return
        self.generation = generation
        try:
            self.config = load_config(self.settings.home)
            log.info("config reloaded (generation %s)", generation)
        except ConfigError as e:
            log.error("config reload failed, keeping the old config: %s", e.message)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Fire what is due if we hold the lock; the seconds to sleep before the next tick."""
        standby = min(1.0, self.settings.beat_lock_ttl / 3)
        try:
            if not self._hold():
                return standby
            now = time.time()
            self._reload_if_asked(now)
            deadline = self.settings.timer_deadline
            timers.sync_heartbeats(self.redis, self.config, now)
            timers.fire_crons(self.redis, self.config.agents.keys(), now, deadline)
            timers.fire_heartbeats(self.redis, self.config, now, deadline)
            next_due = timers.next_due(self.redis)
        except redis.RedisError as e:
            log.warning("redis: %s; retrying", e)
            self.holding = False
            return standby
        static: float = super().tick(*args, **kwargs)
        wait = min(static, self.settings.beat_tick)
        if next_due is not None:
            wait = min(wait, next_due - time.time())
        # Celery's scheduler wakes 10 ms before a static entry is due and then asks for no
        # sleep until it is (and for none after it sent one): with the round trips of our
        # tick, that was ~20 ticks in a row before every reaper sweep.
        return max(wait, MIN_TICK)

    def send_task(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Send a static entry's task; the reaper's without a ``task-sent`` event.

        The reaper runs every few seconds: its events would bury a run's tasks in Flower's
        list. The worker sends none for it (``send_events=False`` on the task); this keeps the
        sent event out too. Beat's tick is one thread, so the switch is seen by this send only.
        """
        if name != REAP:
            return super().send_task(name, *args, **kwargs)
        conf = self.app.conf
        saved, conf.task_send_sent_event = conf.task_send_sent_event, False
        try:
            return super().send_task(name, *args, **kwargs)
        finally:
            conf.task_send_sent_event = saved

    def close(self) -> None:
        """Release the lock so a standby beat takes over at once."""
        if self.holding:
            with contextlib.suppress(LockError, redis.RedisError):
                self.lock.release()
            self.holding = False
        super().close()
