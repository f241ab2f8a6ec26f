"""The Agent Protocol (LangGraph Server API) over walrus, as ``langgraph-sdk`` calls it.

An agent is an assistant and a graph of the same name; a thread is a conversation; a run is a
run. Routes at the root (``/threads``, ``/runs``, ``/assistants``, ``/store``, ``/info``,
``/ok``), so a LangGraph client is pointed at the gateway's base URL as is.
"""

from gateway.agent_protocol import assistants, extras, runs, threads

ROUTERS = (assistants.router, threads.router, runs.router, extras.router)
"""The Agent Protocol routers (``create_app`` includes them)."""
