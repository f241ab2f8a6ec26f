"""``python -m worker``: one Celery worker process serving the walrus queues."""

from __future__ import annotations

import argparse
import socket

from walrus_tasks import profiling, tracing
from walrus_tasks.celery_app import ALL_QUEUES, app
from walrus_tasks.log import setup_logging
from walrus_tasks.settings import get_settings, settings_or_exit
from worker import metrics, providers


def main() -> None:
    """Parse the flags and run the worker until it is stopped."""
    parser = argparse.ArgumentParser(prog="walrus worker")
    parser.add_argument("--queues", default=",".join(ALL_QUEUES))
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    parser.add_argument("--hostname", default=f"walrus@{socket.gethostname()}")
    parser.add_argument("--loglevel", default=None)
    parser.add_argument(
        "--metrics-port", metavar="[HOST:]PORT", default=None,
        help="serve Prometheus /metrics of all pool processes here (host 127.0.0.1)",
    )  # fmt: skip
    args = parser.parse_args()
    settings_or_exit("walrus worker")  # a setting not valid: one line, exit 4
    profiling.start("worker")  # WALRUS_PROFILE_DIR only (walrus_tasks.profiling)
    if args.pool == "prefork":
        profiling.on_worker_process_init()
    setup_logging()
    # Traces (OTEL_* variables, walrus_tasks.tracing): a prefork pool's processes each set
    # their own up as they start; the other pools run tasks in this process.
    if args.pool == "prefork":
        tracing.on_worker_process_init(tracing.WORKER)
    elif tracing.setup(tracing.WORKER):
        tracing.instrument_celery()
    if args.metrics_port:  # before anything imports prometheus_client, and before the pool forks
        metrics.serve(args.metrics_port)
    else:
        metrics.no_multiprocess()
    # Imported only now, after metrics.serve() set the multiprocess dir: they may import
    # prometheus_client. Only the worker command: celery's whole command line would load every
    # subcommand and plugin (amqp's shell, Flower), most of a second of a worker's start.
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker as worker_command

    import worker.tasks  # noqa: F401  (registers the task bodies on the app)
    from worker import consumer

    app.conf.worker_consumer = consumer.PATH  # task events a batch at a time

    if get_settings().worker_preload_sdks:  # in the parent: the pool's processes inherit them
        providers.import_sdks()

    argv = [
        f"--queues={args.queues}",
        f"--pool={args.pool}",
        f"--hostname={args.hostname}",
        f"--loglevel={args.loglevel or get_settings().log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.concurrency:
        argv.append(f"--concurrency={args.concurrency}")
    # Not app.worker_main(): it runs the command with click's standalone mode off and drops
    # the exit code, so a worker that stopped on an "Unrecoverable error" (exit code 1) exited
    # 0 and an on-failure restart policy left it down. Standalone, click exits with the
    # worker's code (0 after a warm shutdown).
    context = CLIContext(app=app, no_color=False, workdir=None, quiet=False)
    worker_command.main(args=argv, prog_name="walrus worker", obj=context)


if __name__ == "__main__":
    main()
