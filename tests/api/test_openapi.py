"""/openapi.json: every route documented, from the same models that validate requests."""

from __future__ import annotations

import pytest
from jsonschema.validators import Draft202012Validator
from openapi_schema_validator import OAS31Validator

from api.openapi import DOCUMENTED_PREFIXES, docs_for
from api.schemas import SendSms
from tests.api.conftest import auth
from tests.api.test_inbound import post_inbound


@pytest.fixture
def spec(client):
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.get_json()


def check(spec: dict, path: str, method: str, status: int, body) -> None:
    """Validate a real answer against the schema the spec gives for it."""
    media = spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
    OAS31Validator({**media["schema"], "components": spec["components"]}).validate(body)


def test_every_api_and_webhook_route_has_an_entry(app, spec):
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(DOCUMENTED_PREFIXES):
            continue
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            if docs_for(app, rule.endpoint, method) is None:
                missing.append(f"{method} {rule.rule} ({rule.endpoint})")
    assert not missing, "document these routes with api.openapi.document: " + ", ".join(missing)
    for path in (
        "/api/user/sms",
        "/api/user/sms/{message_id}",
        "/api/user/balance",
        "/api/user/phone-numbers",
        "/api/user/phone-numbers/{number_id}",
        "/api/user/sms/inbound",
        "/api/user/sms/inbound/{inbound_id}",
        "/webhooks/twilio/inbound",
        "/webhooks/twilio/status",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/api/admin/users",
        "/api/admin/users/{user_id}",
        "/api/admin/users/{user_id}/topups",
        "/api/admin/users/{user_id}/tokens",
        "/api/admin/tokens/{token_id}",
        "/api/admin/users/{user_id}/phone-numbers",
        "/api/admin/phone-numbers",
        "/api/admin/phone-numbers/{number_id}",
        "/api/admin/prices",
        "/api/admin/prices/{country}",
        "/api/admin/prices/import",
    ):
        assert path in spec["paths"], path


def test_the_spec_is_openapi_31_with_valid_schemas(spec):
    assert spec["openapi"].startswith("3.1")
    for schema in spec["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            assert op["summary"] and op["responses"], (method, path)


def test_the_send_request_schema_is_the_validating_model(spec):
    op = spec["paths"]["/api/user/sms"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/SendSms"
    schema = spec["components"]["schemas"]["SendSms"]
    assert schema == SendSms.model_json_schema()
    assert set(schema["required"]) == {"from", "to", "body"}
    assert schema["properties"]["from"]["type"] == "integer"
    assert op["security"] == [{"bearer": []}]
    params = spec["paths"]["/api/user/sms/{message_id}"]["get"]["parameters"]
    assert params[0] == {
        "name": "message_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    }
    names = {p["name"] for p in spec["paths"]["/api/user/sms"]["get"]["parameters"]}
    assert {"status", "campaign_id", "to", "limit", "before"} <= names
    assert not {"page", "per_page"} & names


def test_real_answers_match_their_documented_schemas(client, spec, account):
    _, token, number_id = account
    headers = auth(token)
    sent = client.post(
        "/api/user/sms",
        headers=headers,
        json={"from": number_id, "to": "+14155550123", "body": "Hi"},
    )
    assert sent.status_code == 201
    check(spec, "/api/user/sms", "post", 201, sent.get_json())
    bad = client.post("/api/user/sms", headers=headers, json={"to": "+14155550123"})
    check(spec, "/api/user/sms", "post", 400, bad.get_json())
    message_id = sent.get_json()["data"]["id"]
    check(
        spec,
        "/api/user/sms/{message_id}",
        "get",
        200,
        client.get(f"/api/user/sms/{message_id}", headers=headers).get_json(),
    )
    check(
        spec, "/api/user/sms", "get", 200, client.get("/api/user/sms", headers=headers).get_json()
    )
    paged = client.get("/api/user/sms?limit=1&status=queued", headers=headers).get_json()
    assert paged["meta"] == {"limit": 1, "next": None}
    check(spec, "/api/user/sms", "get", 200, paged)
    campaigns = client.get("/api/user/sms/campaigns", headers=headers).get_json()
    check(spec, "/api/user/sms/campaigns", "get", 200, campaigns)
    check(
        spec,
        "/api/user/balance",
        "get",
        200,
        client.get("/api/user/balance", headers=headers).get_json(),
    )
    check(
        spec,
        "/api/user/phone-numbers",
        "get",
        200,
        client.get("/api/user/phone-numbers", headers=headers).get_json(),
    )
    check(spec, "/api/user/sms", "get", 401, client.get("/api/user/sms").get_json())


def test_inbound_answers_match_their_documented_schemas(client, spec, account):
    _, token, number_id = account
    headers = auth(token)
    post_inbound(client, "STOP")
    inbound = client.get("/api/user/sms/inbound", headers=headers).get_json()
    check(spec, "/api/user/sms/inbound", "get", 200, inbound)
    [item] = inbound["data"]
    assert item["from"] and item["keyword"] == "STOP"
    one = client.get(f"/api/user/sms/inbound/{item['id']}", headers=headers)
    check(spec, "/api/user/sms/inbound/{inbound_id}", "get", 200, one.get_json())
    missing = client.get(f"/api/user/sms/inbound/{item['id'] + 1}", headers=headers)
    check(spec, "/api/user/sms/inbound/{inbound_id}", "get", 404, missing.get_json())
    path = "/api/user/phone-numbers/{number_id}"
    url = f"/api/user/phone-numbers/{number_id}"
    cleared = client.patch(url, headers=headers, json={"inbound_url": None})
    check(spec, path, "patch", 200, cleared.get_json())
    bad = client.patch(url, headers=headers, json={"inbound_url": "ftp://x"})
    check(spec, path, "patch", 400, bad.get_json())
    body = spec["paths"][path]["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PhoneNumberUpdate"}
    names = {p["name"] for p in spec["paths"]["/api/user/sms/inbound"]["get"]["parameters"]}
    assert {"phone_number_id", "from", "limit", "before"} <= names


def test_operator_routes_have_their_tag_and_need_a_bearer_token(spec):
    operations = [
        (path, method, op)
        for path, methods in spec["paths"].items()
        if path.startswith("/api/admin/")
        for method, op in methods.items()
    ]
    assert len(operations) == 14
    for path, method, op in operations:
        assert op["tags"] == ["operator"], (method, path)
        assert op["security"] == [{"bearer": []}], (method, path)
        assert "401" in op["responses"] and "429" not in op["responses"], (method, path)
    topup = spec["paths"]["/api/admin/users/{user_id}/topups"]["post"]
    ref = topup["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/TopUp"
    assert "Idempotency-Key" in topup["description"]
    amount = spec["components"]["schemas"]["TopUp"]["properties"]["amount"]
    assert amount["type"] == ["number", "string"]
    upload = spec["paths"]["/api/admin/prices/import"]["post"]["requestBody"]["content"]
    assert set(upload) == {"text/csv", "multipart/form-data"}
    assert "429" in spec["paths"]["/api/user/sms"]["post"]["responses"]


def test_docs_page_uses_only_the_apps_own_assets(client):
    page = client.get("/docs").get_data(as_text=True)
    assert "/docs/assets/swagger-ui-bundle.js" in page
    assert "http://" not in page and "https://" not in page
    asset = client.get("/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.data) > 100_000
