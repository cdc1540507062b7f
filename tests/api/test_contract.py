"""The reference in the repository, the OpenAPI document and /docs tell what the API does."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, settings_for
from tests.support.asgi import asgi_client
from tillpoint.bootstrap import build
from tillpoint.entrypoints.api.problems import STATUS

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "api.md"


def error_table() -> dict[str, int]:
    """`code -> status` from the rows of docs/api.md's error table, each with its anchor."""
    section = REFERENCE.read_text().split("## Error codes", 1)[1]
    rows = re.findall(r'^\| (\d{3}) \| <a id="([a-z_]+)"></a>`([a-z_]+)`', section, re.M)
    for _, anchor, code in rows:
        assert anchor == code, f"the anchor of {code} is {anchor}"
    return {code: int(status) for status, _, code in rows}


class TestReference:
    def test_every_error_code_has_its_row_and_anchor(self) -> None:
        documented = error_table()
        for code, status in STATUS.items():
            assert documented.get(code) == status, f"{code} ({status}) in docs/api.md"

    def test_no_link_points_outside_the_repository(self) -> None:
        files = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("src/**/*.py")]
        for path in files:
            text = path.read_text()
            assert "../shared" not in text, path
            assert "tillpoint.dev" not in text, path
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
                if target.startswith(("http://", "https://", "/")):
                    continue  # served paths (/docs/reference) and no external docs are linked
                assert (path.parent / target).exists(), f"{path}: broken link {target}"

    def test_the_test_cards_of_the_mock_are_documented(self) -> None:
        from tillpoint.adapters.providers.mock import CARDS

        text = REFERENCE.read_text()
        for card in CARDS:
            assert f"`{card}`" in text, card

    async def test_a_problem_type_resolves_to_its_row(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/payments/pay_missing", headers=headers(SERVICE_KEY))
        problem = assert_problem(response, 404, "not_found")
        path, _, anchor = problem["type"].partition("#")
        assert (path, anchor) == ("/docs/reference", "not_found")
        page = await client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        for code in error_table():
            assert f'id="{code}"' in page.text, code


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.urls.append(value)


class TestSwaggerUi:
    async def test_docs_use_only_assets_the_service_serves(self, client: httpx.AsyncClient) -> None:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower()
        assert "https://" not in page.text
        assert "http://" not in page.text
        parser = _Assets()
        parser.feed(page.text)
        assert any(u.endswith("swagger-ui-bundle.js") for u in parser.urls), parser.urls
        assert any(u.endswith("swagger-ui.css") for u in parser.urls), parser.urls
        for url in parser.urls:
            assert url.startswith("/"), url
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert asset.content, url
        assert "/openapi.json" in page.text


class TestOpenApi:
    @pytest.fixture
    async def doc(self, client: httpx.AsyncClient) -> dict[str, Any]:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def test_bearer_scheme_on_every_authenticated_operation(self, doc: dict[str, Any]) -> None:
        assert doc["components"]["securitySchemes"]["bearer"] == {
            "type": "http",
            "scheme": "bearer",
            "description": doc["components"]["securitySchemes"]["bearer"]["description"],
        }
        unauthenticated = {"/healthz", "/healthz/ready", "/metrics", "/health/ready"}
        for path, item in doc["paths"].items():
            for method, op in item.items():
                public = path in unauthenticated or ("webhook" in path and method == "post")
                public = public and "/admin/" not in path
                assert ("security" in op) is not public, (method, path)
                if not public:
                    assert "401" in op["responses"], (method, path)

    def test_every_idempotent_post_declares_the_header(self, doc: dict[str, Any]) -> None:
        for path, item in doc["paths"].items():
            op = item.get("post")
            if op is None or ("webhook" in path and "/admin/" not in path):
                continue
            params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "header"}
            assert "Idempotency-Key" in params, path
            body_key = path in {"/api/v1/payments", "/api/payments"}
            assert params["Idempotency-Key"]["required"] is not body_key, path
            assert "400" in op["responses"], path

    def test_errors_are_problem_documents_and_successes_have_models(
        self, doc: dict[str, Any]
    ) -> None:
        assert {"type", "title", "status", "detail", "code", "request_id"} <= set(
            doc["components"]["schemas"]["Problem"]["required"]
        )
        assert "HTTPValidationError" not in doc["components"]["schemas"]
        for path, item in doc["paths"].items():
            for method, op in item.items():
                for status, response in op["responses"].items():
                    content = response.get("content", {})
                    if status.startswith(("4", "5")) and path not in {
                        "/healthz/ready",
                        "/health/ready",
                    }:
                        assert list(content) == ["application/problem+json"], (
                            method,
                            path,
                            status,
                        )
                    if status.startswith("2") and "application/json" in content:
                        schema = content["application/json"]["schema"]
                        assert schema.get("$ref"), (method, path, status, schema)

    def test_a_payment_names_one_of_the_configured_providers(self, doc: dict[str, Any]) -> None:
        for body in ("CreatePaymentIn", "CheckoutPaymentIn"):
            provider = doc["components"]["schemas"][body]["properties"]["provider"]
            named = [m for m in provider["anyOf"] if m.get("type") == "string"]
            assert [m["enum"] for m in named] == [["mock"]], body
            assert {"type": "null"} in provider["anyOf"], body  # none: the default provider
        # a filter may name a provider no longer configured: no enum there
        listing = doc["paths"]["/api/v1/payments"]["get"]["parameters"]
        (filter_,) = [p for p in listing if p["name"] == "provider"]
        assert "enum" not in json.dumps(filter_)

    async def test_the_providers_are_those_of_the_server(self, database_url: str) -> None:
        current = build(settings_for(database_url, stripe_api_key="sk_test_document"))
        try:
            async with asgi_client(current) as client:
                doc = (await client.get("/openapi.json")).json()
        finally:
            await current.aclose()
        provider = doc["components"]["schemas"]["CreatePaymentIn"]["properties"]["provider"]
        assert provider["anyOf"][0]["enum"] == ["mock", "stripe"]

    def test_real_statuses_of_a_few_operations(self, doc: dict[str, Any]) -> None:
        paths = doc["paths"]
        assert {"200", "400", "401", "402", "404", "409", "422"} <= set(
            paths["/api/v1/payments/{payment_id}/confirm"]["post"]["responses"]
        )
        assert {"201", "400", "401", "403", "404", "409", "422"} <= set(
            paths["/api/v1/payments/{payment_id}/refund"]["post"]["responses"]
        )
        assert "403" in paths["/api/v1/payments"]["get"]["responses"]
        assert "403" not in paths["/api/v1/payments/{payment_id}"]["get"]["responses"]

    async def test_declared_statuses_match_answers(self, api: Api) -> None:
        """The statuses a few real requests get are the ones the document declares."""
        doc = (await api.client.get("/openapi.json")).json()["paths"]
        order = await api.order()
        created = await api.payment(order, method={"token": "pm_card_chargeDeclined"})
        cases = [
            (await api.confirm(created["payment_id"]), "/api/v1/payments/{payment_id}/confirm"),
            (
                await api.post(f"/api/v1/payments/{created['payment_id']}/refund", {}),
                "/api/v1/payments/{payment_id}/refund",
            ),
            (
                await api.client.get("/api/v1/payments", headers=headers(SERVICE_KEY)),
                "/api/v1/payments",
            ),
            (
                await api.client.post("/api/v1/orders", json={}, headers=headers(ADMIN_KEY)),
                "/api/v1/orders",
            ),
        ]
        for response, path in cases:
            method = response.request.method.lower()
            assert str(response.status_code) in doc[path][method]["responses"], (
                path,
                response.status_code,
            )


class TestMessages:
    async def test_every_outbox_body_follows_its_schema(self, api: Api) -> None:
        from tests.events.contract import violations

        bodies: list[tuple[str, Any]] = []
        refunded = await api.confirmed()
        await api.post(
            f"/api/v1/payments/{refunded['payment_id']}/refund", {"amount": "1.00"}, key=ADMIN_KEY
        )
        held = await api.confirmed(capture_method="manual")
        await api.post(f"/api/v1/payments/{held['payment_id']}/capture", {"amount": "50.00"})
        voided = await api.confirmed(capture_method="manual")
        await api.post(f"/api/v1/payments/{voided['payment_id']}/void", {"reason": "asked"})
        declined = await api.payment(await api.order(), method={"token": "pm_card_expired"})
        await api.confirm(declined["payment_id"])
        for payment in (refunded, held, voided, declined):
            bodies += [(key, body) for key, _, body in await api.outbox(payment["payment_id"])]
        assert {key for key, _ in bodies} == {
            "payment.authorized",
            "payment.succeeded",
            "payment.failed",
            "payment.canceled",
            "payment.refunded",
        }
        for key, body in bodies:
            assert violations(key, body) == [], body


async def test_every_answer_declares_its_request_id_and_replays_say_so(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()["paths"]
    confirm = doc["/api/v1/payments/{payment_id}/confirm"]["post"]["responses"]
    assert confirm["200"]["headers"]["X-Request-ID"]["required"] is True
    assert confirm["402"]["headers"]["Idempotent-Replayed"]["required"] is False
    assert "Idempotent-Replayed" not in doc["/healthz"]["get"]["responses"]["200"]["headers"]
