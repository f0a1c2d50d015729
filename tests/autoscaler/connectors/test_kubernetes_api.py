"""Error classification of the connector (the retry policy depends on it)."""

from __future__ import annotations

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from autoscaler.connectors.kubernetes_api import classify
from autoscaler.ports import ConflictError, NotFoundError, PermanentError, TemporaryError


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (409, ConflictError),
        (429, TemporaryError),
        (500, TemporaryError),
        (503, TemporaryError),
        (404, NotFoundError),
        (403, PermanentError),
        (422, PermanentError),
        (400, PermanentError),
    ],
)
def test_api_errors(status: int, kind: type[Exception]) -> None:
    err = classify(ApiException(status=status, reason="x"), "patch thing")
    assert type(err) is kind
    assert str(status) in str(err)


def test_transport_errors_are_temporary() -> None:
    assert isinstance(
        classify(urllib3.exceptions.ReadTimeoutError(None, "/x", "timed out"), "get"), TemporaryError
    )
    assert isinstance(classify(ConnectionResetError(), "get"), TemporaryError)
    assert isinstance(classify(ValueError("bad"), "get"), PermanentError)
