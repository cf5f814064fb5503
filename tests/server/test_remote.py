"""RemoteRepository's error translation (the live calls are in test_e2e.py)."""

from __future__ import annotations

import json

import pytest
import requests

from publisher import errors
from publisher.remote import RemoteRepository, error_classes, error_from_response


def response(status: int, body: bytes, content_type: str = "application/json") -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body
    resp.headers["Content-Type"] = content_type
    resp.reason = "Reason"
    return resp


def all_error_classes() -> list[type[errors.AptshipError]]:
    return [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.AptshipError)
    ]


def test_every_error_code_maps_back_to_its_class() -> None:
    classes = error_classes()
    for cls in all_error_classes():
        assert classes[cls.code] is cls, cls
        body = json.dumps({"error": {"code": cls.code, "message": "m"}}).encode()
        err = error_from_response(response(cls.http_status, body), "http://x")
        assert type(err) is cls and err.message == "m" and err.exit_code == cls.exit_code


def test_unknown_code_and_non_json_bodies() -> None:
    body = json.dumps({"error": {"code": "from_the_future", "message": "m"}}).encode()
    assert type(error_from_response(response(418, body), "http://x")) is errors.AptshipError
    for status, cls in (
        (401, errors.Unauthorized),
        (404, errors.NotFound),
        (502, errors.StorageError),
    ):
        err = error_from_response(response(status, b"<html>", "text/html"), "http://srv")
        assert type(err) is cls
        assert "http://srv" in err.message and str(status) in err.message


def test_bad_arguments() -> None:
    with pytest.raises(errors.UsageError):
        RemoteRepository("ftp://x", "t")
    with pytest.raises(errors.Unauthorized, match="APTSHIP_TOKEN"):
        RemoteRepository("http://x", "")
