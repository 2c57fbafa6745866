"""The catalog API over real HTTP against a migrated SQLite file."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import ARTISTS, AUTH, LiveServer, assert_error, post_artist

PIAF = {
    "name": "Édith Piaf",
    "kind": "person",
    "country": "France",
    "genres": ["chanson", "cabaret"],
    "active_from": 1935,
    "active_to": 1963,
    "notable_works": ["La Vie en rose", "Non, je ne regrette rien"],
    "notes": "Born in Paris.",
}


class TestCreate:
    def test_create_when_valid_then_201_with_location_and_stored(self, server: LiveServer) -> None:
        response = post_artist(server, PIAF)
        assert response.status_code == 201
        body = response.json()
        assert response.headers["location"] == f"{ARTISTS}/{body['id']}"
        assert body["name"] == "Édith Piaf" and body["genres"] == ["chanson", "cabaret"]
        assert body["article"] is None
        assert body["created_at"].endswith(("Z", "+00:00"))
        # committed before the answer: a second connection sees it at once
        assert server.client.get(f"{ARTISTS}/{body['id']}").json()["name"] == "Édith Piaf"

    def test_create_when_only_name_then_defaults(self, server: LiveServer) -> None:
        body = post_artist(server, {"name": "  Nina Simone  "}).json()
        assert body["name"] == "Nina Simone"
        assert body["kind"] == "person" and body["genres"] == [] and body["notes"] is None

    @pytest.mark.parametrize(
        ("name", "existing"),
        [("Édith Piaf", "Édith Piaf"), ("EDITH PIAF", "Édith Piaf"), ("edith  piaf", "Édith Piaf")],
    )
    def test_create_when_name_exists_folded_then_409(
        self, server: LiveServer, name: str, existing: str
    ) -> None:
        post_artist(server, {"name": existing})
        before = server.sqlite_rows()
        assert_error(post_artist(server, {"name": name}), 409, "conflict")
        assert server.sqlite_rows() == before


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({}, "body.name"),
            ({"name": ""}, "body.name"),
            ({"name": "   "}, "body.name"),
            ({"name": "x" * 201}, "body.name"),
            ({"name": 42}, "body.name"),
            ({"name": "A", "kind": "duo"}, "body.kind"),
            ({"name": "A", "genres": "jazz"}, "body.genres"),
            ({"name": "A", "genres": ["jazz", 3]}, "body.genres.1"),
            ({"name": "A", "genres": ["g"] * 21}, "body.genres"),
            ({"name": "A", "active_from": "1950"}, "body.active_from"),
            ({"name": "A", "active_from": 1950.5}, "body.active_from"),
            ({"name": "A", "active_from": 99999}, "body.active_from"),
            ({"name": "A", "active_from": 1990, "active_to": 1980}, "body"),
            ({"name": "A", "notes": "n" * 5001}, "body.notes"),
            ({"name": "A", "unknown": 1}, "body.unknown"),
            ({"name": None}, "body.name"),
        ],
    )
    def test_create_when_field_invalid_then_422_with_fields(
        self, server: LiveServer, body: dict[str, Any], loc: str
    ) -> None:
        error = assert_error(post_artist(server, body), 422, "validation_error")
        assert loc in [field["loc"] for field in error["fields"]]
        assert server.sqlite_rows() == []

    @pytest.mark.parametrize("raw", [b"{", b"{'name': 'x'}", b"name=x", b"\xff\xfe", b'{"name": "A",}'])
    def test_create_when_body_not_json_then_400_invalid_json(self, server: LiveServer, raw: bytes) -> None:
        response = server.client.post(
            ARTISTS, content=raw, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert_error(response, 400, "invalid_json")
        assert server.sqlite_rows() == []

    @pytest.mark.parametrize("raw", [b"[]", b'"name"', b"null", b"42"])
    def test_create_when_json_not_an_object_then_422(self, server: LiveServer, raw: bytes) -> None:
        response = server.client.post(
            ARTISTS, content=raw, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert_error(response, 422, "validation_error")
        assert server.sqlite_rows() == []

    def test_create_when_body_over_limit_then_413_json(self, server: LiveServer) -> None:
        body = {"name": "A", "notes": "n" * (server.settings.max_body_bytes + 10)}
        assert_error(post_artist(server, body), 413, "payload_too_large")
        assert server.sqlite_rows() == []

    def test_create_when_chunked_body_over_limit_then_413_json(self, server: LiveServer) -> None:
        chunk = b" " * 8192

        def body() -> Any:
            yield b'{"name": "A", "notes": "'
            for _ in range(server.settings.max_body_bytes // len(chunk) + 2):
                yield chunk
            yield b'"}'

        response = server.client.post(
            ARTISTS, content=body(), headers={**AUTH, "Content-Type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "payload_too_large")
        assert server.sqlite_rows() == []

    @pytest.mark.parametrize(
        "params",
        [{"per_page": 101}, {"per_page": 0}, {"page": 0}, {"page": "two"}, {"q": "x" * 201}],
    )
    def test_list_when_query_invalid_then_422(self, server: LiveServer, params: dict[str, Any]) -> None:
        error = assert_error(server.client.get(ARTISTS, params=params), 422, "validation_error")
        assert error["fields"][0]["loc"].startswith("query.")

    @pytest.mark.parametrize("artist_id", ["abc", "0", "-1", "99999999999999999999"])
    def test_get_when_id_malformed_then_422(self, server: LiveServer, artist_id: str) -> None:
        assert_error(server.client.get(f"{ARTISTS}/{artist_id}"), 422, "validation_error")

    @pytest.mark.parametrize(
        "artist_id", ["999999999999999999999999999999", "2147483648", "0", "-1", "abc", "%C2%B2", "9" * 5000]
    )
    def test_every_artist_route_when_id_out_of_range_or_not_a_number_then_422_never_500(
        self, server: LiveServer, artist_id: str
    ) -> None:
        for method, suffix in [
            ("GET", ""),
            ("PATCH", ""),
            ("DELETE", ""),
            ("GET", "/article"),
            ("GET", "/article/versions"),
            ("GET", "/article/versions/1"),
            ("GET", "/article/stream"),
            ("POST", "/article"),
            ("POST", "/article/jobs"),
        ]:
            body = {"notes": "x"} if method == "PATCH" else None
            path = f"{ARTISTS}/{artist_id}{suffix}"
            error = assert_error(
                server.client.request(method, path, json=body, headers=AUTH), 422, "validation_error"
            )
            assert [field["loc"] for field in error["fields"]] == ["path.artist_id"], (method, suffix)

    @pytest.mark.parametrize("version", ["99999999999999999999", "2147483648", "0", "²"])
    def test_article_version_when_out_of_range_or_not_a_number_then_422(
        self, server: LiveServer, version: str
    ) -> None:
        response = server.client.get(f"{ARTISTS}/1/article/versions/{version}")
        error = assert_error(response, 422, "validation_error")
        assert [field["loc"] for field in error["fields"]] == ["path.version"]

    @pytest.mark.parametrize("job_id", ["f" * 65, "9" * 5000, "XYZ", "%C2%B2"])
    def test_job_routes_when_id_too_long_or_malformed_then_422(self, server: LiveServer, job_id: str) -> None:
        for method, suffix in [("GET", ""), ("GET", "/stream"), ("DELETE", "")]:
            response = server.client.request(method, f"/api/v1/jobs/{job_id}{suffix}", headers=AUTH)
            assert_error(response, 422, "validation_error")

    def test_unknown_route_then_json_404(self, server: LiveServer) -> None:
        assert_error(server.client.get("/api/v1/nothing-here"), 404, "not_found")

    def test_wrong_method_then_json_405(self, server: LiveServer) -> None:
        assert_error(server.client.put(ARTISTS), 405, "method_not_allowed")


class TestAuth:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer"},
            {"Authorization": "Basic dGVzdDp0ZXN0"},
            {"Authorization": "Bearer test-toke"},  # a prefix of the real token
            {"Authorization": "Bearer test-token-and-more"},
            {"Authorization": "bearer test-token-é".encode()},  # type: ignore[dict-item]
        ],
    )
    def test_writes_when_token_missing_or_wrong_then_401(
        self, server: LiveServer, headers: dict[str, str]
    ) -> None:
        artist_id = post_artist(server, {"name": "Björk"}).json()["id"]
        before = server.sqlite_rows()
        client = server.client
        responses = [
            client.post(ARTISTS, json={"name": "Daft Punk"}, headers=headers),
            client.patch(f"{ARTISTS}/{artist_id}", json={"name": "Bjork"}, headers=headers),
            client.delete(f"{ARTISTS}/{artist_id}", headers=headers),
        ]
        for response in responses:
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        assert server.sqlite_rows() == before

    def test_writes_when_no_tokens_configured_then_401(self, make_server: Any) -> None:
        with make_server(api_tokens=[]) as server:
            response = server.client.post(ARTISTS, json={"name": "A"}, headers=AUTH)
            assert_error(response, 401, "unauthorized")
            assert server.sqlite_rows() == []

    def test_writes_when_non_ascii_token_then_compared_as_bytes(self, make_server: Any) -> None:
        with make_server(api_tokens=["clé-secrète", "other"]) as server:
            good = {"Authorization": "Bearer clé-secrète".encode()}
            bad = {"Authorization": "Bearer clé-secrèt€".encode()}
            assert_error(server.client.post(ARTISTS, json={"name": "A"}, headers=bad), 401, "unauthorized")
            assert server.client.post(ARTISTS, json={"name": "A"}, headers=good).status_code == 201

    def test_reads_need_no_token(self, server: LiveServer) -> None:
        assert server.client.get(ARTISTS).status_code == 200


class TestGetUpdateDelete:
    def test_get_when_unknown_then_404_artist_not_found(self, server: LiveServer) -> None:
        assert_error(server.client.get(f"{ARTISTS}/12345"), 404, "artist_not_found")

    def test_patch_changes_only_sent_fields(self, server: LiveServer) -> None:
        artist = post_artist(server, PIAF).json()
        response = server.client.patch(
            f"{ARTISTS}/{artist['id']}", json={"genres": ["chanson"], "notes": None}, headers=AUTH
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["genres"] == ["chanson"] and body["notes"] is None
        assert body["name"] == PIAF["name"] and body["notable_works"] == PIAF["notable_works"]
        assert body["updated_at"] >= artist["updated_at"]

    def test_patch_renames_and_search_follows(self, server: LiveServer) -> None:
        artist = post_artist(server, PIAF).json()
        server.client.patch(f"{ARTISTS}/{artist['id']}", json={"name": "La Môme"}, headers=AUTH)
        assert server.client.get(ARTISTS, params={"q": "mome"}).json()["total"] == 1
        assert server.client.get(ARTISTS, params={"q": "edith"}).json()["total"] == 0

    def test_patch_when_name_taken_then_409_unchanged(self, server: LiveServer) -> None:
        post_artist(server, {"name": "Björk"})
        other = post_artist(server, {"name": "Sigur Rós"}).json()
        before = server.sqlite_rows()
        response = server.client.patch(f"{ARTISTS}/{other['id']}", json={"name": "BJORK"}, headers=AUTH)
        assert_error(response, 409, "conflict")
        assert server.sqlite_rows() == before

    def test_patch_same_name_other_case_is_allowed(self, server: LiveServer) -> None:
        artist = post_artist(server, {"name": "bjork"}).json()
        response = server.client.patch(f"{ARTISTS}/{artist['id']}", json={"name": "Björk"}, headers=AUTH)
        assert response.status_code == 200 and response.json()["name"] == "Björk"

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"name": None}, "body"),
            ({"kind": None}, "body"),
            ({"active_to": 1900}, "body.active_to"),
            ({"genres": "rock"}, "body.genres"),
            ({"id": 5}, "body.id"),
        ],
    )
    def test_patch_when_invalid_then_422_unchanged(
        self, server: LiveServer, body: dict[str, Any], loc: str
    ) -> None:
        artist = post_artist(server, PIAF).json()
        before = server.sqlite_rows()
        error = assert_error(
            server.client.patch(f"{ARTISTS}/{artist['id']}", json=body, headers=AUTH), 422, "validation_error"
        )
        assert loc in [field["loc"] for field in error["fields"]]
        assert server.sqlite_rows() == before

    def test_patch_when_unknown_then_404(self, server: LiveServer) -> None:
        response = server.client.patch(f"{ARTISTS}/999", json={"notes": "x"}, headers=AUTH)
        assert_error(response, 404, "artist_not_found")

    def test_delete_then_gone(self, server: LiveServer) -> None:
        artist = post_artist(server, PIAF).json()
        response = server.client.delete(f"{ARTISTS}/{artist['id']}", headers=AUTH)
        assert response.status_code == 204 and response.content == b""
        assert_error(server.client.get(f"{ARTISTS}/{artist['id']}"), 404, "artist_not_found")
        assert_error(server.client.delete(f"{ARTISTS}/{artist['id']}", headers=AUTH), 404, "artist_not_found")


class TestList:
    @pytest.fixture
    def catalog(self, server: LiveServer) -> LiveServer:
        for body in [
            PIAF,
            {
                "name": "The Beatles",
                "kind": "group",
                "genres": ["rock", "pop"],
                "notable_works": ["Abbey Road"],
            },
            {"name": "Nina Simone", "genres": ["jazz", "soul"], "notable_works": ["I Put a Spell on You"]},
            {"name": "Björk", "genres": ["Electronic", "pop"], "notable_works": ["Homogenic"]},
            {
                "name": "Sigur Rós",
                "kind": "group",
                "genres": ["post-rock"],
                "notable_works": ["Ágætis byrjun"],
            },
        ]:
            assert post_artist(server, body).status_code == 201
        return server

    def names(self, server: LiveServer, **params: Any) -> list[str]:
        response = server.client.get(ARTISTS, params=params)
        assert response.status_code == 200, response.text
        return [item["name"] for item in response.json()["items"]]

    @pytest.mark.parametrize(
        ("q", "expected"),
        [
            ("edith", ["Édith Piaf"]),
            ("ÉDITH", ["Édith Piaf"]),
            ("piaf edith", ["Édith Piaf"]),
            ("bjork", ["Björk"]),
            ("ROS", ["Édith Piaf", "Sigur Rós"]),  # "La Vie en rose" too: substring match
            ("agaetis", ["Sigur Rós"]),  # a work, accent-free
            ("abbey road", ["The Beatles"]),
            ("jazz", ["Nina Simone"]),
            ("vie en rose", ["Édith Piaf"]),
            ("%", []),
            ("_", []),
            ("nobody", []),
        ],
    )
    def test_search_is_case_and_accent_insensitive(
        self, catalog: LiveServer, q: str, expected: list[str]
    ) -> None:
        assert self.names(catalog, q=q) == expected

    def test_genre_filter_matches_whole_genre_any_case(self, catalog: LiveServer) -> None:
        assert self.names(catalog, genre="POP") == ["Björk", "The Beatles"]
        assert self.names(catalog, genre="electronic") == ["Björk"]
        assert self.names(catalog, genre="rock") == ["The Beatles"]  # not post-rock
        assert self.names(catalog, genre="pop", q="beatles") == ["The Beatles"]

    def test_pagination(self, catalog: LiveServer) -> None:
        first = catalog.client.get(ARTISTS, params={"per_page": 2}).json()
        assert first["total"] == 5 and first["page"] == 1 and first["per_page"] == 2
        pages = [self.names(catalog, per_page=2, page=page) for page in (1, 2, 3, 4)]
        assert pages[3] == []
        assert [name for names in pages for name in names] == [
            "Björk",
            "Édith Piaf",
            "Nina Simone",
            "Sigur Rós",
            "The Beatles",
        ]
