"""Tenants: whose conversations, runs and workspace a request acts in.

A tenant is named by the gateway token (``[gateway] tokens = [{token, tenant}]``), never by what
a tenant token's client writes. Inside the state layer a tenant's conversation is an ordinary
conversation whose sender carries the tenant: ``<tenant>/<sender>``. Client senders never
contain ``/`` (``names.SENDER_RE``), so no client can write its way into a tenant, and the
default tenant (``None``) keeps today's keys exactly: ``agent:sender``. Because the tenant rides
in the sender, everything keyed by the conversation (inbox, lease, history, runs, the drain, a
delegate's children, ``ask_user`` replies) stays in the tenant without being told.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from walrus_tasks.errors import Forbidden, InvalidInput
from walrus_tasks.names import sender_name

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SEP = "/"
"""Between the tenant and the client's sender in a scoped sender (never in a client sender)."""


def tenant_name(name: str) -> str:
    """``name`` if it is a valid tenant name, else InvalidInput."""
    if not isinstance(name, str) or not TENANT_RE.fullmatch(name):
        raise InvalidInput(f"invalid tenant {name!r}: must match {TENANT_RE.pattern}")
    return name


def scoped(tenant: str | None, sender: str) -> str:
    """The state layer's sender of the client's ``sender`` in ``tenant`` (None: the default)."""
    return f"{tenant}{SEP}{sender}" if tenant else sender


def stored_sender(sender: str) -> str:
    """``sender`` if it is a valid state-layer sender (a client's, or one scoped to a tenant)."""
    tenant = tenant_of(sender)
    if tenant is not None:
        tenant_name(tenant)
    if not bare(sender) or sender_name(bare(sender)) != bare(sender):
        raise InvalidInput(f"invalid sender {sender!r}")
    return sender


def tenant_of(sender: str) -> str | None:
    """The tenant a (scoped) sender is in; None for the default tenant."""
    tenant, sep, _ = sender.partition(SEP)
    return tenant if sep else None


def bare(sender: str) -> str:
    """The client's sender of a scoped sender (the sender itself in the default tenant)."""
    return sender.partition(SEP)[2] or sender


def acting(own: str | None, requested: str | None) -> str | None:
    """The tenant a request acts in: the token's own, else the one an admin token names.

    ``own`` is the token's tenant (None for an admin token or an open gateway). A tenant token
    that names a tenant is refused (Forbidden): its tenant comes from the token alone.
    """
    if own is not None:
        if requested is not None:
            raise Forbidden(
                f"this token acts in tenant {own!r} only; do not name a tenant in the request"
            )
        return own
    return tenant_name(requested) if requested is not None else None


@dataclass(frozen=True)
class Caller:
    """Who is asking: a token of ``tenant``, or an admin token.

    An admin token (``tenant`` None; also the caller of a gateway without tokens) acts in any
    tenant and sees everything.
    """

    tenant: str | None = None

    @property
    def admin(self) -> bool:
        """True for an admin token: it may name a tenant, and sees every tenant's things."""
        return self.tenant is None

    def acting(self, requested: str | None) -> str | None:
        """The tenant this caller's request acts in (``acting``)."""
        return acting(self.tenant, requested)

    def sees(self, sender: str) -> bool:
        """True if this caller may see what belongs to ``sender`` (a scoped sender)."""
        return self.admin or tenant_of(sender) == self.tenant


OPEN = Caller()
"""The caller of a gateway without tokens, or of an admin token."""
