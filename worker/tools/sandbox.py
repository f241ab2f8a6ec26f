"""What ``bash`` runs in: a scrubbed environment, and bubblewrap where it is installed.

The environment is an allow-list, never the worker's (it holds provider API keys and the
``WALRUS_*`` settings). The bubblewrap sandbox shows the command the working directory
(read-write), the system (``/usr``, ``/etc``, read-only), a fresh ``/tmp``, ``/proc`` and
``/dev``, and nothing else: not the config directory, not other workspaces, not ``/home``.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from walrus_tasks.config import BashConfig
from walrus_tasks.sandbox import Sandbox

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSED_ON = ("LANG", "LANGUAGE", "TZ")
"""Worker variables a command may see (locale and time zone only), with every ``LC_*``."""
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Top-level directories bound read-only (or recreated as the symlinks into /usr they are)."""
HIDDEN_ETC = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
"""Files of /etc replaced by an empty file: the sandbox runs as the worker's user (root too)."""


def command_env(cwd: Path, rules: BashConfig, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a command: the allow-list, then the agent's ``env``, then the call's."""
    env = {
        "PATH": SAFE_PATH,
        "HOME": str(cwd),
        "PWD": str(cwd),
        "TERM": "dumb",
        "USER": _user(),
        "LOGNAME": _user(),
        "LANG": "C.UTF-8",
    }
    env.update((k, v) for k, v in os.environ.items() if k in PASSED_ON or k.startswith("LC_"))
    env.update(rules.env)
    env.update(extra)
    return env


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def wrap(argv: list[str], cwd: Path, rules: BashConfig, sandbox: Sandbox) -> list[str]:
    """``argv`` as run inside ``sandbox`` with ``cwd`` as the only writable directory."""
    if sandbox.kind != "bwrap":
        return argv
    out = [sandbox.bwrap, "--ro-bind", "/usr", "/usr"]
    for top in SYSTEM_DIRS:
        if os.path.islink(top):
            out += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            out += ["--ro-bind", top, top]
    out += ["--ro-bind", "/etc", "/etc"]
    for secret in HIDDEN_ETC:
        if os.path.exists(secret):
            out += ["--ro-bind", os.devnull, secret]
    out += ["--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
    # After /tmp: a working directory under /tmp is bound on top of the fresh one.
    out += ["--bind", str(cwd), str(cwd), "--chdir", str(cwd)]
    out += ["--remount-ro", "/"]  # the sandbox's own root: only the workspace and /tmp take writes
    out += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    out += ["--new-session"]  # no TIOCSTI into a terminal the worker may have
    if not rules.network:
        out.append("--unshare-net")
    return [*out, "--", *argv]
