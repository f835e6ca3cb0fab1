"""The dev stack's codec server, so a newcomer sees decrypted payloads in the Temporal UI.

The dev server's UI has no login and sends no ``Authorization`` header: its codec endpoint
carries a key of its own in the path (``refundflow.codec_server``), an ``ops`` key named
``dev-temporal-ui`` kept in the data folder (``ui-codec.key``, the user's alone). It is on the
dev Temporal server's command line, so it is a dev-only arrangement: production UIs pass the
user's token instead (README, "The codec server")."""

from __future__ import annotations

from pathlib import Path

import uvicorn
from sqlalchemy import Engine

from refundflow.cli.dev_guards import write_private
from refundflow.codec_server import KEY_SEGMENT, create_codec_app
from refundflow.db.engine import session_scope
from refundflow.db.repository import create_api_key, verify_api_key
from refundflow.payload_codec import EncryptionCodec
from refundflow.settings import Settings

UI_KEY_FILE = "ui-codec.key"
UI_KEY_NAME = "dev-temporal-ui"


def ensure_ui_key(engine: Engine, data_dir: Path, merchant: str) -> str:
    """The UI's ops key, reused while it is valid (the merchant exists by then)."""
    path = data_dir / UI_KEY_FILE
    with session_scope(engine) as session:
        if path.exists():
            token = path.read_text().strip()
            if verify_api_key(session, token=token) is not None:
                return token
        _, token = create_api_key(session, merchant_id=merchant, name=UI_KEY_NAME, role="ops")
    write_private(path, token + "\n")
    return token


def ui_codec_endpoint(host: str, port: int, token: str) -> str:
    return f"http://{host}:{port}/{KEY_SEGMENT}/{token}"


def codec_server(
    settings: Settings, engine: Engine, *, host: str, port: int, ui_origin: str
) -> uvicorn.Server:
    app = create_codec_app(EncryptionCodec(settings.payload_keyring()), engine, ui_origin=ui_origin)
    # No access log: the UI's endpoint carries its key in the path.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
    )
    return uvicorn.Server(config)
