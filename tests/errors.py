"""The API's one error shape, as the tests check it."""


def assert_error(response, status: int, code: str | None = None) -> dict:
    """``response`` is the JSON error ``{"error": {status, code, message, ...}}`` with ``status`` (and ``code``)."""
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["status"] == status
    assert error["message"]
    if code:
        assert error["code"] == code
    return error
