"""The OpenAPI document: valid OpenAPI 3.1, one entry per route, and its rules agree with the
code's (schemathesis then checks every answer against it: test_openapi_conformance)."""

import re
from typing import Any

import jsonschema_rs
import orjson
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from starlette.routing import Route

from kv.container import Settings
from kv.domain.errors import InvalidKey
from kv.domain.model import MAX_KEY_BYTES, parse_key
from kv.entrypoints.components import IF_MATCH_PATTERN, IF_NONE_MATCH_PATTERN
from kv.entrypoints.docs import DOCS_ASSETS_PATH
from kv.entrypoints.http import create_app
from kv.entrypoints.openapi import build_document
from kv.entrypoints.operations import operations
from kv.entrypoints.problems import problem_body
from kv.entrypoints.schemas import KEY_PATTERN
from kv.metrics import strip_convertors
from tests.conftest import open_client

SETTINGS = [
    Settings(),
    Settings(auth_token="t"),
    Settings(enable_reset=True, metrics=False),
]


def documented(settings: Settings) -> dict[str, Any]:
    return build_document(settings, operations(settings))


@pytest.mark.parametrize("settings", SETTINGS)
def test_the_document_is_valid_openapi_3_1(settings: Settings) -> None:
    document = documented(settings)
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()  # the OAS 3.1 meta-schema
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name  # each is valid JSON Schema


@pytest.mark.parametrize("settings", SETTINGS)
def test_every_route_is_documented_and_every_documented_path_is_a_route(
    settings: Settings,
) -> None:
    app = create_app(settings)
    routes = {
        strip_convertors(route.path).rstrip("/") or "/"
        for route in app.routes
        if isinstance(route, Route)  # not the Mount of the Swagger UI files
    }
    paths = {path.rstrip("/") or "/" for path in documented(settings)["paths"]}
    assert routes == paths


def test_v1_and_reset_appear_with_their_routes_and_reset_only_when_enabled() -> None:
    on = documented(Settings(enable_reset=True))["paths"]
    assert {"/v1/", "/v1/{key}", "/_reset"} <= on.keys()
    assert set(on["/v1/{key}"]) == {"get", "head", "put", "delete"}
    assert set(on["/_reset"]) == {"get", "post"}
    off = documented(Settings(enable_reset=False))["paths"]
    assert "/_reset" not in off and "/v1/" in off
    # The document follows the table it is given: no /v1 or /_reset without their operations.
    kv_only = [op for op in operations(Settings(enable_reset=True)) if op.path.startswith("/kv")]
    bare = build_document(Settings(enable_reset=True), kv_only)
    assert set(bare["paths"]) == {"/kv", "/kv/{key}"}


def documented_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_with_a_token_every_data_operation_needs_bearer_and_may_answer_401() -> None:
    settings = Settings(auth_token="t", enable_reset=True)
    document = documented(settings)
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    data = {(op.path, op.method.lower()) for op in operations(settings) if op.data}
    assert {path for path, _ in data} >= {"/kv", "/kv/{key}", "/v1/", "/v1/{key}", "/_reset"}
    for path, method, operation in documented_operations(document):
        protected = (path, "get" if method == "head" else method) in data
        assert ("security" in operation) is protected, (path, method)
        assert ("401" in operation["responses"]) is protected, (path, method)


def test_without_a_token_nothing_mentions_bearer_or_401() -> None:
    document = documented(Settings(enable_reset=True))
    assert "securitySchemes" not in document["components"]
    text = orjson.dumps(document).decode()
    assert '"401"' not in text and '"security"' not in text


def test_each_data_operation_lists_the_statuses_of_the_contract() -> None:
    paths = documented(Settings(enable_reset=True))["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert statuses("/kv", "post") == {"200", "400", "409", "413", "503"}
    assert statuses("/kv/{key}", "get") == {"200", "304", "400", "404", "412", "503"}
    assert statuses("/kv/{key}", "head") == {"200", "304", "400", "404", "412", "503"}
    assert statuses("/kv/{key}", "put") == {"200", "400", "404", "412", "413", "503"}
    assert statuses("/kv/{key}", "delete") == {"200", "400", "404", "412", "503"}
    assert statuses("/v1/", "post") == {"200", "400", "409", "413", "503"}
    assert statuses("/v1/{key}", "put") == {"200", "400", "404", "412", "413", "503"}
    assert statuses("/_reset", "post") == {"200", "503"}
    assert statuses("/ready", "get") == {"200", "503"}

    def parameters(path: str, method: str) -> list[str]:
        return [p.get("$ref", "").rsplit("/", 1)[-1] for p in paths[path][method]["parameters"]]

    for path in ("/kv/{key}", "/v1/{key}"):
        assert parameters(path, "put") == ["Key", "IfMatch", "IfNoneMatchStar"]
        assert parameters(path, "get") == ["Key", "IfMatch", "IfNoneMatch"]
        assert parameters(path, "delete") == ["Key", "IfMatch"]
    etag = paths["/kv/{key}"]["get"]["responses"]["200"]["headers"]["ETag"]
    assert etag == {"$ref": "#/components/headers/ETag"}


# --- the document's rules agree with the code's ----------------------------------------------

KEY = re.compile(KEY_PATTERN)


@given(st.text(min_size=1, max_size=40))
def test_the_key_pattern_accepts_exactly_the_valid_keys_of_up_to_1024_bytes(key: str) -> None:
    try:
        parse_key(key)
        valid = True
    except InvalidKey:
        valid = False
    if any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        return  # lone surrogates: not in JSON text, refused by the JSON parser first
    assert bool(KEY.fullmatch(key)) is valid, key  # `$` alone matches before a final \n


@pytest.mark.parametrize("key", ["a", "config/db/host", "a b%+é✓", "x" * MAX_KEY_BYTES])
def test_valid_keys_match_the_key_schema_in_every_validator(key: str) -> None:
    schema = documented(Settings())["components"]["schemas"]["Key"]
    assert jsonschema_rs.validator_for(schema).is_valid(key)
    parse_key(key)


@pytest.mark.parametrize("key", ["", "a/", "a\nb", "a\x7f", "x" * (MAX_KEY_BYTES + 1)])
def test_invalid_keys_fail_the_key_schema(key: str) -> None:
    schema = documented(Settings())["components"]["schemas"]["Key"]
    assert not jsonschema_rs.validator_for(schema).is_valid(key)


async def test_if_match_values_the_pattern_allows_are_never_a_400() -> None:
    allowed = ["*", '"1"', '"2"', 'W/"1"', '"0001"', '"' + "9" * 30 + '"']
    refused = ["1", '"one"', '"1", "2"', '""', "W/1"]
    assert all(re.match(IF_MATCH_PATTERN, value) for value in allowed)
    assert not any(re.match(IF_MATCH_PATTERN, value) for value in refused)
    async for client in open_client(Settings()):
        await client.post("/kv", json={"key": "a", "value": 1})
        for value in allowed:
            response = await client.put("/kv/a", json={"value": 1}, headers={"if-match": value})
            assert response.status_code in (200, 412), (value, response.text)
        for value in refused:
            response = await client.put("/kv/a", json={"value": 1}, headers={"if-match": value})
            assert response.status_code == 400, value


async def test_if_none_match_values_the_pattern_allows_are_never_a_400_on_a_read() -> None:
    allowed = ["*", '"1"', 'W/"1"', '"1", "2"', '"3",W/"1"', '"0001"']
    refused = ["1", '"one"', '"1",', '""', "W/1", '"1" "2"']
    assert all(re.match(IF_NONE_MATCH_PATTERN, value) for value in allowed)
    assert not any(re.match(IF_NONE_MATCH_PATTERN, value) for value in refused)
    async for client in open_client(Settings()):
        await client.post("/kv", json={"key": "a", "value": 1})
        for value in allowed:
            response = await client.get("/kv/a", headers={"if-none-match": value})
            assert response.status_code in (200, 304), (value, response.text)
        for value in ('"1"', '"one"', "W/1"):  # a write takes only *
            response = await client.put(
                "/kv/a", json={"value": 1}, headers={"if-none-match": value}
            )
            assert response.status_code == 400, value


def test_problem_bodies_match_the_problem_schema() -> None:
    schema = documented(Settings())["components"]["schemas"]["Problem"]
    validator = jsonschema_rs.validator_for(schema)
    for status, title in ((400, "Bad Request"), (404, "Not Found"), (503, "Service Unavailable")):
        assert validator.is_valid(orjson.loads(problem_body(status, title, "d", key="k")))
    assert not validator.is_valid({"type": "about:blank", "title": "x", "status": 400})


# --- serving ---------------------------------------------------------------------------------


async def test_the_document_is_served_as_built_once() -> None:
    settings = Settings(auth_token="t")
    async for client in open_client(settings):
        first = await client.get("/openapi.json")
        second = await client.get("/openapi.json/")  # a trailing / is ignored here too
    assert first.status_code == 200 and first.headers["content-type"] == "application/json"
    assert first.content == second.content
    assert first.json() == documented(settings)


async def test_the_docs_page_uses_only_local_assets_and_they_are_served() -> None:
    async for client in open_client(Settings(auth_token="t")):
        page = await client.get("/docs")  # open even when a token is required
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(asset.startswith(DOCS_ASSETS_PATH + "/") for asset in assets)
        assert "http://" not in page.text and "https://" not in page.text
        for asset in assets:
            response = await client.get(asset)
            assert response.status_code == 200 and len(response.content) > 100, asset
        assert (await client.get(DOCS_ASSETS_PATH + "/../../README.md")).status_code == 404


async def test_the_swagger_ui_bundle_renders_openapi_3_1() -> None:
    """Swagger UI renders OpenAPI 3.1 from version 5 on; an older bundle would show an error
    instead of the operations."""
    async for client in open_client(Settings()):
        bundle = await client.get(DOCS_ASSETS_PATH + "/swagger-ui-bundle.js")
    version = re.search(rb'PACKAGE_VERSION:"(\d+)\.\d+\.\d+"', bundle.content)
    assert version is not None and int(version.group(1)) >= 5


async def test_the_docs_static_directory_is_a_404_not_a_redirect_to_itself() -> None:
    """#20 item 15: `/docs/static` and `/docs/static/` answered 307 to themselves (Starlette's
    slash redirect against kv's own trailing-slash rule), with a Location built from Host."""
    async for client in open_client(Settings()):
        page = await client.get("/docs")
        asset = re.findall(r'(?:src|href)="([^"]+)"', page.text)[0]
        for path in (DOCS_ASSETS_PATH, DOCS_ASSETS_PATH + "/"):
            response = await client.get(path, headers={"host": "evil.example"})
            assert response.status_code == 404, (path, response.headers)
            assert "location" not in response.headers
            assert response.headers["content-type"] == "application/problem+json"
        assert (await client.get(asset)).status_code == 200


async def test_no_path_of_the_app_answers_with_a_redirect() -> None:
    """Every route of the document and the assets' mount, with and without a trailing /,
    by every method: kv answers or refuses, and never sends the client elsewhere."""
    settings = Settings(enable_reset=True, auth_token="t")
    paths = [path.replace("{key}", "a/b") for path in documented(settings)["paths"]]
    paths += [DOCS_ASSETS_PATH, "/docs/static/swagger-ui.css", "/nowhere", "/kv/a%2F", "//kv"]
    async for client in open_client(settings):
        for path in paths:
            for variant in {path, path.rstrip("/") or "/", path.rstrip("/") + "/", path + "//"}:
                for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"):
                    response = await client.request(
                        method, variant, headers={"host": "evil.example"}
                    )
                    assert not 300 <= response.status_code < 400, (method, variant)
                    assert "location" not in response.headers, (method, variant)
