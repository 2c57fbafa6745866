"""The contract's error shapes for what no route decides itself, over real HTTP: a body that is not JSON
(400 `invalid_json`, wherever the JSON decoder gives up) and a method the path does not have (405
`method_not_allowed` with an `Allow` header listing every method the path has)."""

from __future__ import annotations

import pytest

from tests.support import ARTISTS, AUTH, LiveServer, add_artist, assert_error

JSON = {**AUTH, "Content-Type": "application/json"}

# Bodies that no JSON decoder should be asked to make sense of. Each fails in a different place of
# FastAPI's body decoding: UnicodeDecodeError, the int digits limit (ValueError), RecursionError.
NOT_JSON = {
    "not UTF-8": b'{"name": "Bj\xf6rk"}',
    "a 5,000-digit number": b'{"name": "A", "active_from": ' + b"9" * 5000 + b"}",
    "5,000-deep arrays": b"[" * 5000 + b"]" * 5000,
    "5,000-deep objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
}


class TestBodyNotJson:
    @pytest.mark.parametrize("raw", NOT_JSON.values(), ids=NOT_JSON.keys())
    def test_create_when_body_not_json_then_400_invalid_json(self, server: LiveServer, raw: bytes) -> None:
        assert len(raw) < server.settings.max_body_bytes  # refused for what it is, not for its size
        assert_error(server.client.post(ARTISTS, content=raw, headers=JSON), 400, "invalid_json")
        assert server.sqlite_rows() == []

    @pytest.mark.parametrize("raw", NOT_JSON.values(), ids=NOT_JSON.keys())
    def test_update_when_body_not_json_then_400_invalid_json_and_unchanged(
        self, server: LiveServer, raw: bytes
    ) -> None:
        artist_id = add_artist(server)
        before = server.sqlite_rows()
        response = server.client.patch(f"{ARTISTS}/{artist_id}", content=raw, headers=JSON)
        assert_error(response, 400, "invalid_json")
        assert server.sqlite_rows() == before

    def test_create_when_nesting_deep_but_decodable_then_422_not_invalid_json(
        self, server: LiveServer
    ) -> None:
        # 200 levels decode (well under the interpreter's recursion limit): valid JSON, the wrong shape.
        raw = b"[" * 200 + b"]" * 200
        assert_error(server.client.post(ARTISTS, content=raw, headers=JSON), 422, "validation_error")


STANDARD_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed(header: str) -> set[str]:
    return {method.strip() for method in header.split(",") if method.strip()}


class TestMethodNotAllowed:
    def test_put_when_path_has_get_patch_delete_then_405_allow_lists_them_all(
        self, server: LiveServer
    ) -> None:
        artist_id = add_artist(server)
        response = server.client.put(f"{ARTISTS}/{artist_id}", json={"name": "B"}, headers=AUTH)
        error = assert_error(response, 405, "method_not_allowed")
        methods = allowed(response.headers["allow"])
        assert {"GET", "PATCH", "DELETE"} <= methods and "PUT" not in methods
        assert "PUT" in error["message"]

    @pytest.mark.parametrize(
        "path",
        [
            ARTISTS,
            f"{ARTISTS}/1",
            f"{ARTISTS}/999/article",  # an unknown artist: a POST answers 404, starting nothing
            f"{ARTISTS}/999/article/jobs",
            "/api/v1/jobs/abc123",
            "/",
            "/artists/999/portrait",
            "/static/atelier.css",
        ],
    )
    def test_any_path_when_method_missing_then_allow_names_exactly_the_methods_that_answer(
        self, server: LiveServer, path: str
    ) -> None:
        # Allow is right when every method it lists answers something other than 405 and every other
        # method answers 405 (requests go without a token: writes answer 401, never change anything).
        add_artist(server)  # artist 1
        answers = {method: server.client.request(method, path) for method in STANDARD_METHODS}
        refused = [response for response in answers.values() if response.status_code == 405]
        assert refused, f"every method answers on {path}"
        listed = allowed(refused[0].headers.get("allow", ""))
        answering = {method for method, response in answers.items() if response.status_code != 405}
        assert listed == answering, (path, listed, answering)
        for method, response in answers.items():
            if response.status_code == 405:
                assert allowed(response.headers["allow"]) == listed
                if method != "HEAD":  # a HEAD answer has no body to read the error from
                    assert_error(response, 405, "method_not_allowed")
