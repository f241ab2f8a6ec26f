"""What an operation is, and how each face is built from one: an HTTP route, a WebSocket op.

An operation is a blocking function ``fn(call, **arguments)``: ``call`` is the :class:`Call`
(Redis, config, settings, the caller, the app); its other parameters are its arguments, each
annotated as FastAPI would read it. Its signature is its argument model, once for every face:

- HTTP (:meth:`Operation.endpoint`): a parameter named in the path is a path parameter; one
  annotated with a pydantic model is the JSON body; the others are query parameters (or what
  their ``Annotated`` marker says, e.g. ``Header``). FastAPI validates and documents them.
- WebSocket (:meth:`Operation.call_with`): a frame's fields by name; the body model's fields
  sit in the frame itself (``{"op": "steer", "agent", "sender", "content"}``). The same
  annotations validate them (:func:`walrus_tasks.errors.describe_invalid` words the failure).

``access`` says what a token needs: ``tenant`` (a tenant token may call it; it keeps to the
caller's tenant) or ``admin`` (it acts across tenants). The table of every operation is
:mod:`gateway.registry`; ``docs/design.md`` ("The operations registry") says why.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import redis
from fastapi import APIRouter, Depends, FastAPI, Request, params
from pydantic import BaseModel, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from gateway.deps import Agent, RunId, caller_of, known_agent, valid_run_id
from gateway.errors import responses
from walrus_tasks.config import Config
from walrus_tasks.errors import InvalidInput, describe_invalid
from walrus_tasks.faces import Face
from walrus_tasks.settings import Settings
from walrus_tasks.tenancy import Caller

Access = Literal["tenant", "admin"]

PATH_TYPES: Mapping[str, Any] = {"agent": Agent, "run_id": RunId}
"""Path parameters checked before the body is read (an unknown agent is a 404 before a 422)."""


@dataclass(frozen=True)
class Call:
    """What an operation runs with: one per request or WebSocket frame."""

    r: redis.Redis
    config: Config
    settings: Settings
    caller: Caller
    app: FastAPI
    face: Face = "http"

    def acting(self, tenant: str | None) -> str | None:
        """The tenant the call acts in: the token's, or the one an admin token names."""
        return self.caller.acting(tenant)


def call_of(app: FastAPI, caller: Caller, face: Face = "http") -> Call:
    """The :class:`Call` of a request to ``app`` by ``caller`` (the config as it is now)."""
    return Call(app.state.redis, app.state.config, app.state.settings, caller, app, face)


async def current_call(request: Request) -> Call:
    """The :class:`Call` of an HTTP request (async: no thread hop, gateway.deps says why)."""
    return call_of(request.app, caller_of(request.scope))


PATH_CHECKS: Mapping[str, Callable[[Call, Any], object]] = {
    "agent": lambda call, name: known_agent(name, call.config),
    "run_id": lambda call, run_id: valid_run_id(run_id),
}
"""The same checks for a frame's fields of those names, before its other fields."""


@dataclass(frozen=True)
class Http:
    """Where an operation answers over HTTP."""

    method: str
    path: str
    status: int = 200
    errors: Mapping[int, str] = field(default_factory=dict)
    tag: str = "operations"
    aliases: tuple[str, ...] = ()
    """Older paths answering the same (listed in the OpenAPI document as deprecated)."""
    stream: bool = False
    """The route is written by hand (``gateway.native``): it may answer with the run's stream."""


def _is_model(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, BaseModel)


def _base(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` metadata."""
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


@dataclass(frozen=True)
class Operation:
    """One operation: its name, function, what a token needs, and its HTTP route if any."""

    name: str
    fn: Callable[..., Any]
    access: Access
    http: Http | None = None
    aliases: tuple[str, ...] = ()
    """Older WebSocket op names answering the same."""
    checks: bool = True
    """Whether an ``agent`` or ``run_id`` argument is checked first (:data:`PATH_CHECKS`)."""

    @property
    def summary(self) -> str:
        """The first line of the function's docstring."""
        return (self.fn.__doc__ or self.name).strip().splitlines()[0]

    @cached_property
    def parameters(self) -> tuple[tuple[str, Any, Any], ...]:
        """``(name, annotation, default)`` of each argument (``call`` left out), read once."""
        hints = get_type_hints(self.fn, include_extras=True)
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return tuple((p.name, hints[p.name], p.default) for p in params)

    @cached_property
    def _checks(self) -> tuple[tuple[str, Callable[[Call, Any], object]], ...]:
        """The :data:`PATH_CHECKS` of the arguments this operation has (none without ``checks``)."""
        names = {name for name, _, _ in self.parameters} if self.checks else set()
        return tuple((n, check) for n, check in PATH_CHECKS.items() if n in names)

    # --- WebSocket ---------------------------------------------------------------------

    @cached_property
    def _frame_model(
        self,
    ) -> tuple[type[BaseModel], frozenset[str], tuple[str, type[BaseModel]] | None]:
        """The arguments' model, the frame fields it reads, the body's ``(name, model)`` if any.

        The fields are the model's names, or their aliases where they have one; built once.
        """
        plain: dict[str, Any] = {}
        body: tuple[str, type[BaseModel]] | None = None
        for name, annotation, default in self.parameters:
            if _is_model(_base(annotation)):
                body = name, _base(annotation)
                continue
            # A marker's constraints (``Query(ge=1)``) hold for a frame too; a Header's alias
            # (its HTTP spelling) does not: a frame names the field. A Query's alias does: it
            # is how a parameter named like a Python keyword is spelt (``from_`` is ``from``).
            markers = get_args(annotation)[1:] if get_origin(annotation) is Annotated else ()
            metadata = [m for f in markers if isinstance(f, FieldInfo) for m in f.metadata]
            alias = next((f.alias for f in markers if isinstance(f, params.Query)), None)
            base = _base(annotation)
            typed = Annotated[base, *metadata] if metadata else base
            value = ... if default is inspect.Parameter.empty else default
            plain[name] = (typed, Field(value, validation_alias=alias) if alias else value)
        model = create_model(f"{self.name}_arguments", __config__={"extra": "ignore"}, **plain)
        named = frozenset(f.validation_alias or n for n, f in model.model_fields.items())
        return model, named, body

    def arguments_of(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of a frame's fields, validated (InvalidInput if not)."""
        model, named, body = self._frame_model
        try:
            values = dict(model.model_validate({k: v for k, v in frame.items() if k in named}))
            if body is not None:
                rest = {k: v for k, v in frame.items() if k not in named}
                values[body[0]] = body[1].model_validate(rest)
        except ValidationError as e:
            raise InvalidInput(describe_invalid(e.errors(), "arguments")) from None
        return values

    def call_with(self, call: Call, frame: Mapping[str, Any]) -> Any:
        """Run the operation on a frame's fields (blocking); the path checks first, as HTTP."""
        for name, check in self._checks:
            if frame.get(name) is not None:
                check(call, frame[name])
        return self.fn(call, **self.arguments_of(frame))

    # --- HTTP --------------------------------------------------------------------------

    def endpoint(self) -> Callable[..., Any]:
        """A FastAPI endpoint: the function's arguments where HTTP carries them, plus the call."""
        assert self.http is not None
        in_path = set(re.findall(r"{(\w+)}", self.http.path))
        params = []
        for name, annotation, default in self.parameters:
            if name in in_path:
                checked = PATH_TYPES.get(name, str) if self.checks else str
                annotation, default = checked, inspect.Parameter.empty
            params.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                  annotation=annotation)
            )  # fmt: skip
        params.append(
            inspect.Parameter("walrus_call", inspect.Parameter.KEYWORD_ONLY,
                              annotation=Annotated[Call, Depends(current_call)])
        )  # fmt: skip
        fn = self.fn

        def endpoint(walrus_call: Call, **arguments: Any) -> Any:
            return fn(walrus_call, **arguments)

        returns = get_type_hints(fn).get("return", Any)
        setattr(endpoint, "__signature__", inspect.Signature(params, return_annotation=returns))  # noqa: B010
        endpoint.__name__ = self.name
        endpoint.__doc__ = fn.__doc__
        return endpoint

    def add_route(self, router: APIRouter) -> None:
        """Add the operation's HTTP route (and its older paths) to ``router``."""
        assert self.http is not None
        http, endpoint = self.http, self.endpoint()
        for path, deprecated in ((http.path, False), *((a, True) for a in http.aliases)):
            router.add_api_route(
                path,
                endpoint,
                methods=[http.method],
                status_code=http.status,
                responses=responses(dict(http.errors)),
                summary=self.summary,
                operation_id=self.name if not deprecated else f"{self.name}_{http.method}_old",
                deprecated=deprecated or None,
                tags=[http.tag],
            )
