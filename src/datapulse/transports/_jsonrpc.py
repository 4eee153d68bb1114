"""JSON-RPC 2.0 message parsing and encoding for the HTTP transports (pure functions).

Parsing is deliberately shallow — envelope shape only (JSON-RPC 2.0 §4, §5) — so a bad body is
refused with the right code before any SDK machinery runs; params are validated by the SDK kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic_core

from datapulse.errors import InvalidRequest, ParseError

RequestId = str | int


@dataclass(frozen=True, slots=True)
class Request:
    """A JSON-RPC request: has an ``id`` and a ``method``."""

    id: RequestId
    method: str
    params: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Notification:
    """A JSON-RPC notification: a ``method`` and no ``id``."""

    method: str
    params: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Response:
    """A JSON-RPC response or error from the peer (an answer to one of our server-to-client requests)."""

    id: RequestId
    result: dict[str, Any] | None
    error: dict[str, Any] | None


Message = Request | Notification | Response


def loads(body: bytes) -> Any:
    """Decode a JSON body.

    Raises:
        ParseError: the body is not valid UTF-8 JSON (JSON-RPC -32700, HTTP 400).
    """
    if not body:
        raise ParseError("Parse error: the request body is empty; send one JSON-RPC message")
    try:
        return pydantic_core.from_json(body)
    except ValueError as exc:
        raise ParseError(f"Parse error: the body is not valid JSON ({_short(exc)})") from None


def classify(obj: Any) -> Message:
    """Classify a decoded JSON value as one JSON-RPC message.

    Raises:
        InvalidRequest: a batch, a non-object, a wrong ``jsonrpc`` version, or a malformed member
            (JSON-RPC -32600, HTTP 400). The message names what is wrong.
    """
    if isinstance(obj, list):
        raise InvalidRequest("Invalid Request: JSON-RPC batches are not supported; send one message per POST")
    if not isinstance(obj, dict):
        raise InvalidRequest("Invalid Request: the body must be a JSON-RPC object")
    if obj.get("jsonrpc") != "2.0":
        raise InvalidRequest('Invalid Request: "jsonrpc" must be "2.0"')
    params = obj.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidRequest('Invalid Request: "params" must be an object')
    method = obj.get("method")
    has_id = "id" in obj
    if method is not None:
        if not isinstance(method, str) or not method:
            raise InvalidRequest('Invalid Request: "method" must be a non-empty string')
        if not has_id:
            return Notification(method, params)
        return Request(_request_id(obj["id"]), method, params)
    if has_id and ("result" in obj or "error" in obj):
        result, error = obj.get("result"), obj.get("error")
        if result is not None and not isinstance(result, dict):
            raise InvalidRequest('Invalid Request: "result" must be an object')
        if error is not None and not isinstance(error, dict):
            raise InvalidRequest('Invalid Request: "error" must be an object')
        return Response(_request_id(obj["id"]), result, error)
    raise InvalidRequest('Invalid Request: a message needs "method" (request/notification) or "result"/"error"')


def _request_id(value: Any) -> RequestId:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidRequest('Invalid Request: "id" must be a string or an integer')
    return value


def dumps(obj: Any) -> str:
    """Encode a JSON value compactly (one line, so it fits one SSE ``data:`` field)."""
    return pydantic_core.to_json(obj).decode()


def response_object(request_id: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC success response (JSON-RPC 2.0 §5)."""
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_object(request_id: RequestId | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """A JSON-RPC error response (JSON-RPC 2.0 §5.1; ``id`` is null when the request's id is unknown)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def response_json(request_id: RequestId, result: dict[str, Any]) -> str:
    """The compact JSON text of a JSON-RPC success response."""
    return dumps(response_object(request_id, result))


def error_json(request_id: RequestId | None, code: int, message: str, data: Any = None) -> str:
    """The compact JSON text of a JSON-RPC error response (``id`` is null when the request's id is unknown)."""
    return dumps(error_object(request_id, code, message, data))


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def notification_json(method: str, params: Mapping[str, Any] | None) -> str:
    """The compact JSON text of a JSON-RPC notification."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return dumps(message)


def progress_params(
    token: str | int, progress: float, total: float | None = None, message: str | None = None
) -> dict[str, Any]:
    """``notifications/progress`` params for ``token`` (MCP basic/utilities/progress)."""
    params: dict[str, Any] = {"progressToken": token, "progress": progress}
    if total is not None:
        params["total"] = total
    if message is not None:
        params["message"] = message
    return params
