"""``bash``: one shell command in the conversation's working directory, under the agent's rules.

The command runs as ``bash -c`` in a session of its own, so the whole process group it starts
(pipelines, background jobs) can be ended together: on a timeout, on a kill of the run, and
after the command exits (stray background jobs). No child outlives the call.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from walrus_tasks.config import BashConfig
from walrus_tasks.errors import Cancelled
from worker.providers.base import ToolSpec
from worker.tools.base import ToolContext, ToolFailed, arg, register, schema

POLL = 0.1
"""Seconds between looks at the run's kill flag (and the timeout) while the command runs."""
TERM_GRACE = 0.5
"""Seconds a killed command gets to exit on SIGTERM before its process group gets SIGKILL."""
DRAIN_GRACE = 0.5
"""Seconds spent collecting output after exit, in case an escaped process holds the pipes."""
READ_CHUNK = 64 * 1024

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HIDDEN_ENV_PREFIX = "WALRUS_"
"""The service's own settings (Redis URL, tokens) are not handed to the model's commands."""


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
            "programs or servers that never exit."
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
    """Run the command, or refuse it; a timeout or a kill ends the whole process group."""
    command = arg(args, "command", str)
    extra = _extra_env(arg(args, "env", dict, {}))
    rules = ctx.agent.bash
    # The env values are checked too: `eval "$X"` would otherwise run a denied command.
    refusal = refused(rules, "\n".join([command, *extra.values()]), ctx.sender)
    if refusal:
        raise ToolFailed(refusal)
    if not ctx.cwd.is_dir():
        raise ToolFailed(f"the working directory {ctx.cwd} does not exist")
    env = {k: v for k, v in os.environ.items() if not k.startswith(HIDDEN_ENV_PREFIX)}
    env.update(extra, PWD=str(ctx.cwd))
    return json.dumps(run(command, ctx.cwd, env, rules, ctx.cancelled))


def refused(rules: BashConfig, command: str, sender: str) -> str:
    """Why ``rules`` refuse ``command`` from ``sender``; empty when allowed."""
    if rules.disabled:
        return "bash is disabled for this agent"
    for pattern in rules.deny_senders:
        if fnmatch.fnmatchcase(sender, pattern):
            return f"bash is not allowed for sender {sender!r} (deny_senders rule {pattern!r})"
    for rule in rules.deny:
        if rule and rule in command:
            return f"command refused: it contains {rule!r} (a deny rule of this agent)"
    return ""


def _extra_env(env: dict[Any, Any]) -> dict[str, str]:
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ToolFailed(f"env: {name!r} is not a valid variable name")
        if not isinstance(value, str) or "\0" in value:
            raise ToolFailed(f"env: the value of {name} must be a string without NUL bytes")
    return env


def run(
    command: str,
    cwd: Path,
    env: dict[str, str],
    rules: BashConfig,
    cancelled: Callable[[], bool],
) -> dict[str, Any]:
    """Run ``command``: ``{stdout, stderr, exit_code}``; ToolFailed on a timeout, Cancelled on kill.

    ``exit_code`` is the shell's: 128 + N when the command died of signal N.
    """
    try:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: we can end everything it starts
        )
    except OSError as e:
        raise ToolFailed(f"cannot start bash in {cwd}: {e}") from None
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Capture(rules.max_output), Capture(rules.max_output)
    streams = {proc.stdout: out, proc.stderr: err}
    deadline = time.monotonic() + rules.timeout
    try:
        with selectors.DefaultSelector() as sel:
            for stream in streams:
                sel.register(stream, selectors.EVENT_READ)
            while not _exited(proc):
                _collect(sel, streams, POLL)
                if cancelled():
                    _end_group(proc)
                    raise Cancelled("bash: the run was killed; the command was terminated")
                if time.monotonic() >= deadline:
                    _end_group(proc)
                    _drain(sel, streams)
                    raise ToolFailed(
                        f"command timed out after {rules.timeout:g}s and was killed\n"
                        f"stdout so far:\n{out.text('stdout')}\n"
                        f"stderr so far:\n{err.text('stderr')}"
                    )
            _end_group(proc)  # SIGKILLs the background jobs it left running
            _drain(sel, streams)
    finally:
        _end_group(proc)
        for stream in streams:
            stream.close()
    code = proc.returncode
    exit_code = 128 - code if code < 0 else code
    return {"stdout": out.text("stdout"), "stderr": err.text("stderr"), "exit_code": exit_code}


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    # Look without reaping: while the leader is a zombie its pid (the group id) cannot be reused,
    # so signalling the group afterwards cannot hit a stranger.
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it after a grace, and reap the leader."""
    if proc.returncode is not None:
        return
    if not _exited(proc):
        _signal_group(proc.pid, signal.SIGTERM)
        give_up = time.monotonic() + TERM_GRACE
        while not _exited(proc) and time.monotonic() < give_up:
            time.sleep(0.01)
    _signal_group(proc.pid, signal.SIGKILL)  # whatever ignored SIGTERM, or was left behind
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


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
