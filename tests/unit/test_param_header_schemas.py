"""`declares_param_headers`: whether a tool's input schema asks for ``Mcp-Param-*`` headers anywhere (only then can
``validate_mcp_param_headers`` find a mismatch, so only then is it run)."""

from __future__ import annotations

from typing import Any

import pytest

from datapulse.transports.modern import declares_param_headers


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object", "properties": {"q": {"type": "string"}}}, False),
        ({"type": "object", "properties": {"q": {"type": "string", "x-mcp-header": "Query"}}}, True),
        ({"type": "object", "$defs": {"Inner": {"properties": {"r": {"x-mcp-header": "Region"}}}}}, True),
        ({"anyOf": [{"type": "null"}, {"properties": {"r": {"x-mcp-header": "Region"}}}]}, True),
        ({"description": "x-mcp-header in prose only"}, False),
        ({}, False),
    ],
)
def test_a_schema_declares_param_headers_only_with_an_x_mcp_header_annotation(
    schema: dict[str, Any], expected: bool
) -> None:
    assert declares_param_headers(schema) is expected
    assert declares_param_headers(schema) is expected  # the remembered answer is the same
