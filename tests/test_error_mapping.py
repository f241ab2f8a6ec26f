"""One mapping from exception to (status, code, message), whichever face renders it."""

from __future__ import annotations

import json

import pytest
import redis
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from gateway.errors import failure_of, failure_response
from walrus_tasks.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable


class Args(BaseModel):
    agent: str


def validation_error() -> ValidationError:
    with pytest.raises(ValidationError) as e:
        Args.model_validate({})
    return e.value


CASES: list[tuple[BaseException, int, str]] = [
    (InvalidInput("bad name"), 422, "invalid"),
    (NotFound("no such run"), 404, "not_found"),
    (Forbidden("not yours"), 403, "forbidden"),
    (Conflict("busy"), 409, "conflict"),
    (Unavailable("failing over"), 503, "unavailable"),
    (validation_error(), 422, "invalid"),
    (RequestValidationError([{"loc": ("body", "agent"), "msg": "Field required"}]), 422, "invalid"),
    (HTTPException(404, "Not Found"), 404, "not_found"),
    (HTTPException(413, "too big"), 413, "too_large"),
    (redis.ConnectionError("refused"), 503, "unavailable"),
    (redis.TimeoutError("slow"), 503, "unavailable"),
    (redis.ReadOnlyError("replica"), 503, "unavailable"),
    (redis.ResponseError("WRONGTYPE"), 500, "error"),
    (RuntimeError("a bug"), 500, "error"),
]


@pytest.mark.parametrize(("exc", "status", "code"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_every_failure_has_one_status_and_code(exc: BaseException, status: int, code: str) -> None:
    got_status, got_code, message = failure_of(exc)
    assert (got_status, got_code) == (status, code)
    assert message


def test_a_validation_error_reads_the_same_from_a_body_and_from_websocket_arguments() -> None:
    _, _, from_args = failure_of(validation_error())
    _, _, from_body = failure_of(
        RequestValidationError([{"loc": ("body", "agent"), "msg": "Field required"}])
    )
    assert from_args == from_body == "agent: Field required"


def test_an_internal_error_tells_the_client_nothing_of_its_details() -> None:
    assert failure_of(RuntimeError("secret path /etc/x"))[2] == "internal error"


def test_faces_render_the_same_status_in_their_own_shape() -> None:
    def openai_shape(status: int, code: str, message: str) -> object:
        from fastapi.responses import JSONResponse

        return JSONResponse({"error": {"type": code, "message": message}}, status_code=status)

    for exc, status, code in CASES:
        native = failure_response(exc)
        other = failure_response(exc, openai_shape)  # type: ignore[arg-type]
        assert native.status_code == other.status_code == status
        assert json.loads(native.body)["error"]["code"] == code
        assert json.loads(other.body)["error"]["type"] == code
        if status == 503:
            assert native.headers["Retry-After"] == other.headers["Retry-After"]
