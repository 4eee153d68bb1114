"""A DataPulse API message whose ``type`` is not a string is a clear 404 error, never a crash (found by schemathesis:
``{"type": {}}`` used to raise TypeError: unhashable type)."""

from __future__ import annotations

from typing import Any

import pytest

from datapulse.errors import MethodNotFound
from datapulse.transports.datapulse_api import parse_api_message


@pytest.mark.parametrize("message_type", [{}, [], ["list_tools"], 1, None, True])
def test_a_message_type_that_is_not_a_string_is_an_unknown_type(message_type: Any) -> None:
    with pytest.raises(MethodNotFound, match="Unknown message type"):
        parse_api_message({"type": message_type, "request_id": "r1", "data": {}})
