"""The OpenAPI 3.1 document of DataPulse's REST endpoints, served at ``/openapi.json`` (public).

It describes the plain request/response endpoints: health, RFC 9728 metadata, stream tickets, the
DataPulse API's ``POST /message`` and ``DELETE /events``, and the 2024-11-05 ``POST /messages``. The
MCP endpoints proper (``/mcp``, the SSE streams) are specified by the MCP specification, not here.
Tests run schemathesis against this document on a live server.
"""

from __future__ import annotations

from typing import Any

from datapulse._version import __version__

JSON = "application/json"

_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["jsonrpc", "id", "error"],
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "id": {"type": ["string", "integer", "null"]},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}},
        },
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed request",
        401: "Missing or invalid bearer token",
        403: "Origin not allowed, or a required scope is missing",
        404: "Unknown session, or a session of another principal",
        405: "Method not allowed",
        406: "Accept excludes the response type",
        413: "Body over max_body_bytes",
        415: "Content-Type is not application/json",
        421: "Host not allowed",
        429: "Rate limit or cap reached (Retry-After)",
        503: "Overloaded, draining, or the cluster store / token issuer is unreachable (Retry-After)",
    }
    error = {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {str(status): {"description": reasons[status], "content": error} for status in statuses}


_SESSION_ID = {
    "name": "session_id",
    "in": "query",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{1,128}$"},
}

_METADATA = {
    "type": "object",
    "required": ["resource", "bearer_methods_supported", "resource_name"],
    "properties": {
        "resource": {"type": "string"},
        "authorization_servers": {"type": "array", "items": {"type": "string"}},
        "scopes_supported": {"type": "array", "items": {"type": "string"}},
        "bearer_methods_supported": {"type": "array", "items": {"type": "string"}},
        "resource_name": {"type": "string"},
    },
}


def _metadata_operation(resource: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": f"protectedResourceMetadata{resource.strip('/').title()}",
            "summary": f"RFC 9728 protected-resource metadata of {resource or 'the server'}",
            "security": [],
            "responses": {"200": {"description": "Metadata", "content": {JSON: {"schema": _METADATA}}}},
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a JSON-serialisable dict)."""
    request_id = {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]}
    api_message = {
        "oneOf": [
            {
                "type": "object",
                "required": ["type", "request_id"],
                "properties": {
                    "type": {"const": "list_tools"},
                    "request_id": request_id,
                    "data": {"type": ["object", "null"]},
                },
            },
            {
                "type": "object",
                "required": ["type", "request_id", "data"],
                "properties": {
                    "type": {"const": "call_tool"},
                    "request_id": request_id,
                    "data": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "arguments": {"type": ["object", "null"]},
                        },
                    },
                },
            },
        ]
    }
    jsonrpc_request = {
        "type": "object",
        "required": ["jsonrpc", "method"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "id": {"type": ["string", "integer"]},
            "method": {"type": "string"},
            "params": {"type": "object"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "DataPulse REST endpoints", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness and counts",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Alive",
                            "content": {
                                JSON: {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status", "version", "node_id", "sessions", "streams"],
                                        "properties": {
                                            "status": {"enum": ["ok", "draining"]},
                                            "version": {"type": "string"},
                                            "uptime_s": {"type": "number"},
                                            "node_id": {"type": "string"},
                                            "sessions": {"type": "object"},
                                            "streams": {"type": "object"},
                                        },
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/.well-known/oauth-protected-resource": _metadata_operation(""),
            "/.well-known/oauth-protected-resource/mcp": _metadata_operation("/mcp"),
            "/.well-known/oauth-protected-resource/sse": _metadata_operation("/sse"),
            "/tickets": {
                "post": {
                    "operationId": "issueStreamTicket",
                    "summary": "A single-use ticket for one GET /events or GET /sse within its lifetime",
                    "responses": {
                        "201": {
                            "description": "Ticket",
                            "content": {
                                JSON: {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ticket", "expires_in"],
                                        "properties": {
                                            "ticket": {"type": "string"},
                                            "expires_in": {"type": "integer"},
                                            "usage": {"type": "string"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(401, 403, 429, 503),
                    },
                }
            },
            "/message": {
                "post": {
                    "operationId": "postApiMessage",
                    "summary": "DataPulse API: a message whose result goes on the session's /events stream "
                    "(without session_id the endpoint answers a JSON-RPC request directly; see README)",
                    "parameters": [_SESSION_ID],
                    "requestBody": {"required": True, "content": {JSON: {"schema": api_message}}},
                    "responses": {
                        "202": {"description": "Accepted for the session's stream"},
                        **_errors(400, 401, 403, 404, 413, 415, 429, 503),
                    },
                }
            },
            "/events": {
                "get": {
                    "operationId": "openEventStream",
                    "summary": "DataPulse API: the session's SSE event stream (creates the session; Last-Event-ID "
                    "resumes)",
                    "parameters": [_SESSION_ID],
                    "responses": {
                        "200": {"description": "Event stream", "content": {"text/event-stream": {"schema": {}}}},
                        **_errors(400, 401, 403, 404, 406, 429, 503),
                    },
                },
                "delete": {
                    "operationId": "endApiSession",
                    "summary": "DataPulse API: end a session (its stream, waiting results and history)",
                    "parameters": [_SESSION_ID],
                    "responses": {"200": {"description": "Ended"}, **_errors(400, 401, 403, 404, 503)},
                },
            },
            "/messages": {
                "post": {
                    "operationId": "postLegacyMessage",
                    "summary": "2024-11-05 HTTP+SSE: a JSON-RPC message for the session; results go on its stream",
                    "parameters": [_SESSION_ID],
                    "requestBody": {"required": True, "content": {JSON: {"schema": jsonrpc_request}}},
                    "responses": {
                        "202": {"description": "Accepted"},
                        **_errors(400, 401, 403, 404, 413, 415, 429, 503),
                    },
                }
            },
        },
    }
