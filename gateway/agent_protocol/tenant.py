"""The tenant an Agent Protocol request acts in: the token's, or the one an admin names.

No ``from __future__ import annotations``: FastAPI resolves the ``Annotated`` aliases at runtime.

A tenant token acts in its own tenant (``?tenant=`` from it is a 403, as on the native routes);
an admin token in the default tenant, or in the one its ``?tenant=`` names. Threads and the
store are keyed by that tenant, so another tenant's are not there (404, left out of searches).
"""

from typing import Annotated

from fastapi import Depends, Query

from gateway.deps import Who


async def acting_tenant(
    who: Who,
    tenant: Annotated[
        str | None,
        Query(
            description="an admin token's tenant to act in (default: the default tenant); a "
            "tenant token acts in its own, and naming one is a 403"
        ),
    ] = None,
) -> str | None:
    """The tenant this request acts in (None: the default tenant; async: gateway.deps says why)."""
    return who.acting(tenant)


Space = Annotated[str | None, Depends(acting_tenant)]
"""The tenant of an Agent Protocol request (``acting_tenant``)."""
