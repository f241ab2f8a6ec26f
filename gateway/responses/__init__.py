"""The OpenAI Responses API face: ``/v1/responses`` over walrus runs (``model`` is the agent).

A response is a view of a walrus run (``gateway/response_operations.py``): ``resp_<run_id>``,
and ``resp_<run_id>_<n>`` for the run's n-th response after client function calls. Modules:
``models`` (the wire shapes), ``inputs`` (reading a request), ``create`` (which operation it
is), ``translate`` (run events to response events and object), ``stream`` (SSE), ``routes``.
"""

from gateway.responses.routes import router

__all__ = ["router"]
