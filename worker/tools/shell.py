"""``bash``: one shell command in the conversation's working directory, under the agent's rules.

The command runs under a supervisor process (``supervise.py``) that ends its whole process tree
when the call ends, on a timeout or a kill of the run, when the worker dies, and when the run's
lease runs out without renewal (a frozen worker): a call never runs in two places at once. The
command gets a scrubbed environment, the agent's resource limits and the bubblewrap sandbox
(``sandbox.py``; a worker that cannot build it refuses, unless ``WALRUS_SANDBOX=none``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from walrus_tasks import sandbox as host_sandbox
from walrus_tasks.config import BashConfig
from walrus_tasks.errors import Cancelled, LeaseLost
from worker.providers.base import ToolSpec
from worker.tools import supervise
from worker.tools.base import ToolContext, ToolFailed, arg, register, schema
from worker.tools.deny import matching_rule
from worker.tools.sandbox import Launch, launch

POLL = 0.1
"""Seconds between looks at the run's kill flag, the timeout and the lease while it runs."""
DRAIN_GRACE = 0.5
"""Seconds spent collecting output after exit, in case an escaped process holds the pipes."""
SUPERVISOR_EXIT = 15.0
"""Seconds the supervisor gets to kill the tree and exit after being told to (or orphaned)."""
READ_CHUNK = 64 * 1024

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Capture:
    """One output stream: its first ``limit`` bytes, and how many bytes came in all."""

    limit: int
    kept: bytearray = field(default_factory=bytearray)
    total: int = 0

    def add(self, chunk: bytes) -> None:
        """Count ``chunk``; keep what fits under the limit."""
        self.total += len(chunk)
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]

    def text(self, name: str) -> str:
        """The kept bytes as text, with a note of how much was cut."""
        out = self.kept.decode("utf-8", errors="replace")
        cut = self.total - len(self.kept)
        if cut:
            out += f"\n[{cut} more bytes of {name} cut: only the first {self.limit} are kept]"
        return out


@register(
    ToolSpec(
        name="bash",
        description=(
            "Run a shell command with `bash -c` in the conversation's working directory and "
            'return JSON {"stdout", "stderr", "exit_code"}. A non-zero exit code is a normal '
            "result. Commands are killed after the agent's timeout (30 s by default), output "
            "is truncated past a size limit, and stdin is empty: do not start interactive "
            "programs or servers that never exit; nothing it starts outlives the call. It runs "
            "in a sandbox where only the working directory and /tmp are writable, the network "
            "is usually off, and processes, memory, file size and CPU time are limited."
        ),
        parameters=schema(
            {
                "command": {"type": "string", "description": "the command line, run by bash"},
                "env": {
                    "type": "object",
                    "description": "extra environment variables for this command",
                    "additionalProperties": {"type": "string"},
                },
            },
            ["command"],
        ),
    )
)
def bash(args: dict[str, Any], ctx: ToolContext) -> str:
    """Run the command, or refuse it; it ends with its whole process tree."""
    command = arg(args, "command", str)
    extra = _extra_env(arg(args, "env", dict, {}))
    rules = ctx.agent.bash
    # The env values are checked too: `eval "$X"` would otherwise run a denied command.
    refusal = refused(rules, [command, *extra.values()], ctx.sender)
    if refusal:
        raise ToolFailed(refusal)
    sandbox = host_sandbox.current()
    if sandbox.refused:
        raise ToolFailed(f"bash cannot run on this worker: {sandbox.detail}")
    if not ctx.cwd.is_dir():
        raise ToolFailed(f"the working directory {ctx.cwd} does not exist")
    with launch(["bash", "-c", command], ctx, sandbox, extra) as start:
        return json.dumps(run(start, rules, ctx))


def refused(rules: BashConfig, lines: list[str], sender: str) -> str:
    """Why ``rules`` refuse the command ``lines`` from ``sender``; empty when allowed."""
    if rules.disabled:
        return "bash is disabled for this agent"
    for pattern in rules.deny_senders:
        if fnmatch.fnmatchcase(sender, pattern):
            return f"bash is not allowed for sender {sender!r} (deny_senders rule {pattern!r})"
    for line in lines:
        if rule := matching_rule(rules.deny, line):
            return f"command refused: it runs or contains {rule!r} (a deny rule of this agent)"
    return ""


def _extra_env(env: dict[Any, Any]) -> dict[str, str]:
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ToolFailed(f"env: {name!r} is not a valid variable name")
        if not isinstance(value, str) or "\0" in value:
            raise ToolFailed(f"env: the value of {name} must be a string without NUL bytes")
    return env


class Supervised:
    """The supervisor of one command: its pipes, the lease deadline it was last given."""

    def __init__(self, start: Launch, deadline: float) -> None:
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", supervise.__file__, str(status_w), repr(deadline),
                 "--", *start.argv],
                cwd=start.cwd,
                env=start.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_w, *start.pass_fds),
                # Its own session: a signal to the worker's group (a SIGSTOP too) spares it.
                start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            os.close(status_r)
            raise ToolFailed(f"cannot start bash in {start.cwd}: {e}") from None
        finally:
            os.close(status_w)
        self._status = status_r
        self.deadline = deadline
        self.status: str | None = None

    def heartbeat(self, deadline: float) -> None:
        """Tell the supervisor the lease now lasts until ``deadline`` (when that changed)."""
        if deadline != self.deadline:
            self.deadline = deadline
            self._say(f"{deadline!r}\n")

    def kill(self) -> None:
        """Ask the supervisor to end the tree (SIGTERM, then SIGKILL after its grace)."""
        self._say("kill\n")

    def _say(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ValueError):  # it has ended already
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()

    def close(self) -> str:
        """Wait for the supervisor (orphaned if need be: it then kills at once); its status."""
        if self.status is not None:
            return self.status
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(SUPERVISOR_EXIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # last resort; it has had its chance to end the tree
            self.proc.wait()
        with os.fdopen(self._status, "rb") as f:
            self.status = f.read().decode().strip()
        return self.status


def run(start: Launch, rules: BashConfig, ctx: ToolContext) -> dict[str, Any]:
    """Run the command supervised: ``{stdout, stderr, exit_code}``.

    ToolFailed on a timeout, Cancelled on a kill of the run, LeaseLost when the lease was lost
    or ran out (the tree is dead either way). ``exit_code`` is the shell's: 128 + N when the
    command died of signal N.
    """
    supervised = Supervised(start, ctx.lease_expires())
    proc = supervised.proc
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Capture(rules.max_output), Capture(rules.max_output)
    streams = {proc.stdout: out, proc.stderr: err}
    deadline = time.monotonic() + rules.timeout
    timed_out = cancelled = False
    try:
        with selectors.DefaultSelector() as sel:
            for stream in streams:
                sel.register(stream, selectors.EVENT_READ)
            while proc.poll() is None and not (timed_out or cancelled):
                _collect(sel, streams, POLL)
                supervised.heartbeat(ctx.lease_expires())
                cancelled = ctx.cancelled()
                timed_out = time.monotonic() >= deadline
            if timed_out or cancelled:
                supervised.kill()
            status = supervised.close()
            _drain(sel, streams)
    finally:
        supervised.close()  # after an error: its stdin closes, so it kills the tree at once
        for stream in streams:
            stream.close()
    if status == "expired" or ctx.lost():
        raise LeaseLost("bash: the run's lease ran out or was lost; the command was killed")
    if cancelled:
        raise Cancelled("bash: the run was killed; the command was terminated")
    if timed_out:
        raise ToolFailed(
            f"command timed out after {rules.timeout:g}s and was killed\n"
            f"stdout so far:\n{out.text('stdout')}\n"
            f"stderr so far:\n{err.text('stderr')}"
        )
    kind, _, number = status.partition(" ")
    if kind not in ("exit", "signal"):
        raise ToolFailed(f"bash: the command's supervisor ended it ({status or 'no status'})")
    exit_code = int(number) + (128 if kind == "signal" else 0)
    return {"stdout": out.text("stdout"), "stderr": err.text("stderr"), "exit_code": exit_code}


def _collect(
    sel: selectors.BaseSelector, streams: dict[IO[bytes], Capture], timeout: float
) -> None:
    """Read what is ready within ``timeout``; unregister streams at end of file."""
    if not sel.get_map():  # both pipes closed: only the exit is left to wait for
        time.sleep(min(timeout, 0.01))
        return
    for key, _ in sel.select(timeout):
        stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
        chunk = os.read(stream.fileno(), READ_CHUNK)
        if chunk:
            streams[stream].add(chunk)
        else:
            sel.unregister(stream)


def _drain(sel: selectors.BaseSelector, streams: dict[IO[bytes], Capture]) -> None:
    """Collect the rest of the output; give up after a grace if something still holds a pipe."""
    give_up = time.monotonic() + DRAIN_GRACE
    while sel.get_map() and (left := give_up - time.monotonic()) > 0:
        _collect(sel, streams, min(left, POLL))
