"""``walrus export DIR`` and ``walrus import DIR``: durable state to and from files.

Both talk to Redis directly (``WALRUS_REDIS_URL``), not to the gateway; the layout and the
rules are in ``walrus_tasks.export``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import redis
import typer
from rich.markup import escape
from rich.table import Table

from walrus_tasks import export_sessions
from walrus_tasks.cli.common import RET_CONNECT, JsonOption, console, fail, print_json
from walrus_tasks.cli.progress import Tell, bars
from walrus_tasks.connection import client
from walrus_tasks.errors import WalrusError
from walrus_tasks.export import MEMORY, TABLES, Summary, export_state, import_state
from walrus_tasks.migrate import migrate as migrate_state
from walrus_tasks.settings import get_settings

DirArgument = Annotated[Path, typer.Argument(help="The export directory.", show_default=False)]

_WHERE = {
    "conversations": export_sessions.INDEX,
    "messages": "sessions/<agent>/<sender>.jsonl",
    "archived": "sessions/<agent>/<sender>.archive.jsonl",
    **{t.name: t.path for t in TABLES},
    "memories": MEMORY + "/<agent>.jsonl",
}


def export(directory: DirArgument, as_json: JsonOption = False) -> None:
    """Write conversations (with compacted history), crons, subscriptions and agent memory to DIR.

    Runs in flight are not exported.
    """
    _run(lambda r, tell: export_state(r, directory, tell), f"exported to {directory}", as_json)


def import_(
    directory: DirArgument,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite the state Redis already holds.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Restore an export from DIR; refuses to overwrite existing state without --replace."""
    _run(
        lambda r, tell: import_state(r, directory, replace, tell), f"imported {directory}", as_json
    )


def _run(operation: Callable[[redis.Redis, Tell], Summary], title: str, as_json: bool) -> None:
    url = get_settings().redis_url
    r = client(url, socket_connect_timeout=2)
    try:
        with bars() as tell:  # on a terminal only: piped, the output is only the summary
            summary = operation(r, tell)
    except (redis.ConnectionError, redis.TimeoutError) as e:
        fail(f"cannot reach Redis at {url}: {e}", RET_CONNECT)
    except WalrusError as e:
        fail(e.message)
    except (redis.RedisError, OSError) as e:  # a Redis refusal, a file that cannot be written
        fail(str(e))
    finally:
        r.close()
    if as_json:
        print_json(summary.as_dict())
        return
    table = Table(title=escape(title), title_justify="left")
    table.add_column("section")
    table.add_column("count", justify="right")
    table.add_column("files")
    for name, count in summary.as_dict().items():
        table.add_row(name, str(count), escape(_WHERE[name]))
    console.print(table)


def migrate() -> None:
    """Rename state written by an earlier release to today's key names (run it once, stopped).

    Conversations and runs of a release before the hash-tag buckets keep working after it.
    Run with every walrus process stopped; a second run finds nothing to do.
    """
    url = get_settings().redis_url
    r = client(url, socket_connect_timeout=2)
    try:
        with bars() as tell:
            size = int(r.dbsize())  # what there is to look at, at most
            done = migrate_state(r, lambda n: tell("renaming keys", n, max(n, size)))
    except (redis.ConnectionError, redis.TimeoutError) as e:
        fail(f"cannot reach Redis at {url}: {e}", RET_CONNECT)
    except redis.RedisError as e:
        fail(str(e))
    finally:
        r.close()
    console.print(
        f"renamed {done.renamed} keys, moved {done.index_members} index entries into buckets"
    )
    for old in done.conflicts:
        console.print(f"[yellow]left {escape(old)}: its new name is taken[/yellow]")
