from __future__ import annotations

import httpx

from tests.harness import ServerProcess


def test_pat_create_list_delete_roundtrip(server: ServerProcess, admin: httpx.Client) -> None:
    created = admin.post("/api/2.0/token/create", json={"comment": "roundtrip", "lifetime_seconds": 600}).json()
    value, token_id = created["token_value"], created["token_info"]["token_id"]
    listed = admin.get("/api/2.0/token/list").json()["token_infos"]
    assert token_id in [t["token_id"] for t in listed]
    assert value not in str(listed), "a listing must never hold a token value"
    assert httpx.get(f"{server.url}/api/2.0/token/list", headers={"Authorization": f"Bearer {value}"}).status_code == 200
    assert admin.post("/api/2.0/token/delete", json={"token_id": token_id}).status_code == 200
    refused = httpx.get(f"{server.url}/api/2.0/token/list", headers={"Authorization": f"Bearer {value}"})
    assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED"


def test_basic_auth_token_form_is_accepted(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/api/2.0/token/list", auth=("token", server.admin_token))
    assert response.status_code == 200


def test_malformed_json_is_a_400_naming_it(admin: httpx.Client) -> None:
    response = admin.post("/api/2.0/token/create", content=b"{bad")
    assert response.status_code == 400
    assert "Malformed JSON" in response.json()["message"]
    response = admin.post("/api/2.0/token/create", json={"lifetime_seconds": "soon"})
    assert response.status_code == 400 and "lifetime_seconds" in response.json()["message"]
