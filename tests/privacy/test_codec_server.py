"""``refundflow codec-server`` over real HTTP, with the payload format the Temporal UI sends."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.common.v1 import Payload

from refundflow.crypto import new_key_entry
from refundflow.db.engine import session_scope
from refundflow.db.repository import revoke_api_key, verify_api_key
from refundflow.payload_codec import EncryptionCodec
from tests.payload_keys import CODEC, PAYLOAD_KEYRING
from tests.privacy.conftest import UI_ORIGIN, CodecServer

SECRET = {"email": "wang.fang@example.com", "account_number": "6222020200112233"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def as_ui_sends(payload: Payload) -> dict[str, Any]:
    """One payload as the UI posts it: metadata values and data base64."""
    return {
        "metadata": {k: b64(v) for k, v in payload.metadata.items()},
        "data": b64(payload.data),
    }


def encrypted_secret() -> dict[str, Any]:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(SECRET).encode())
    return {"payloads": [as_ui_sends(CODEC.encrypt(plain))]}


def ui_headers(key: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-Namespace": "default", "Origin": UI_ORIGIN}
    return headers | ({"Authorization": f"Bearer {key}"} if key else {})


async def test_an_ops_key_decodes_what_the_ui_sends(codec_server: CodecServer) -> None:
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        for role in ("ops", "admin"):
            answer = await http.post(
                "/decode", json=encrypted_secret(), headers=ui_headers(codec_server.keys[role])
            )
            assert answer.status_code == 200, answer.text
            (payload,) = answer.json()["payloads"]
            assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
            assert json.loads(base64.b64decode(payload["data"])) == SECRET
            assert answer.headers["access-control-allow-origin"] == UI_ORIGIN


async def test_everyone_else_is_refused_and_sees_nothing(codec_server: CodecServer) -> None:
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        nobody = await http.post("/decode", json=encrypted_secret(), headers=ui_headers())
        assert nobody.status_code == 401
        assert nobody.headers["content-type"] == "application/problem+json"
        assert nobody.json()["code"] == "unauthorized"
        for role in ("client", "approver"):
            refused = await http.post(
                "/decode", json=encrypted_secret(), headers=ui_headers(codec_server.keys[role])
            )
            assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
            assert SECRET["email"] not in refused.text
        forged = await http.post("/decode", json=encrypted_secret(), headers=ui_headers("rf_x_y"))
        assert forged.status_code == 401
        # A revoked key stops decoding at once.
        with session_scope(codec_server.engine) as session:
            row = verify_api_key(session, token=codec_server.keys["ops"])
            assert row is not None
            revoke_api_key(session, key_id=row.key_id)
        revoked = await http.post(
            "/decode", json=encrypted_secret(), headers=ui_headers(codec_server.keys["ops"])
        )
        assert revoked.status_code == 401


async def test_the_dev_ui_passes_its_key_in_the_endpoint_path(codec_server: CodecServer) -> None:
    """The dev server's UI has no login and sends no Authorization: its codec endpoint carries
    the key as the path segment before the operation."""
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        key = codec_server.keys["ops"]
        answer = await http.post(
            f"/ui-key/{key}/decode", json=encrypted_secret(), headers=ui_headers()
        )
        assert answer.status_code == 200
        assert SECRET["email"] in base64.b64decode(answer.json()["payloads"][0]["data"]).decode()
        client = codec_server.keys["client"]
        refused = await http.post(
            f"/ui-key/{client}/decode", json=encrypted_secret(), headers=ui_headers()
        )
        assert refused.status_code == 403


async def test_encode_then_decode_round_trips(codec_server: CodecServer) -> None:
    plain = {"metadata": {"encoding": b64(b"json/plain")}, "data": b64(b'"hello"')}
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        headers = ui_headers(codec_server.keys["ops"])
        encoded = await http.post("/encode", json={"payloads": [plain]}, headers=headers)
        assert encoded.status_code == 200
        (sealed,) = encoded.json()["payloads"]
        assert base64.b64decode(sealed["metadata"]["encoding"]) == b"binary/encrypted"
        assert b"hello" not in base64.b64decode(sealed["data"])
        decoded = await http.post("/decode", json={"payloads": [sealed]}, headers=headers)
        assert decoded.json() == {"payloads": [plain]}
        # Unencrypted payloads (older histories) and ones whose key is gone come back as sent.
        other = EncryptionCodec(type(PAYLOAD_KEYRING).parse(new_key_entry("gone"), source="t"))
        gone = as_ui_sends(other.encrypt(Payload(data=b"x")))
        mixed = await http.post("/decode", json={"payloads": [plain, gone]}, headers=headers)
        assert mixed.json() == {"payloads": [plain, gone]}


async def test_bad_bodies_are_problems_not_errors(codec_server: CodecServer) -> None:
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        headers = ui_headers(codec_server.keys["ops"])
        bodies = (b"not json", b'{"payloads": [{"data": 5}]}', b'{"payloads": "x"}', b'{"x": 1}')
        for body in bodies:
            answer = await http.post("/decode", content=body, headers=headers)
            assert answer.status_code == 400, body
            assert answer.json()["code"] == "invalid_payloads"


async def test_cors_answers_the_ui_origin_only(codec_server: CodecServer) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        ok = await http.options("/decode", headers=preflight | {"Origin": UI_ORIGIN})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == UI_ORIGIN
        assert ok.headers["access-control-allow-credentials"] == "true"
        allowed = ok.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "x-namespace"} <= set(allowed.split(", "))
        evil = await http.options("/decode", headers=preflight | {"Origin": "https://evil.test"})
        assert evil.status_code == 400
        assert "access-control-allow-origin" not in evil.headers
        simple = await http.post(
            "/decode",
            json=encrypted_secret(),
            headers=ui_headers(codec_server.keys["ops"]) | {"Origin": "https://evil.test"},
        )
        assert "access-control-allow-origin" not in simple.headers


def test_the_command_refuses_to_start_without_payload_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDFLOW_")}
    env["REFUNDFLOW_DATA_DIR"] = str(tmp_path)
    env["REFUNDFLOW_ENCRYPTION_KEYS"] = new_key_entry("db-1")  # never used for payloads
    result = subprocess.run(
        [str(Path(sys.executable).parent / "refundflow"), "codec-server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error missing_encryption_key: no payload keys")
