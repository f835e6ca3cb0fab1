"""How every refundflow process (API, worker, CLI) connects to Temporal.

Temporal's own client configuration is read first (``temporalio.envconfig``: a TOML file of
profiles at ``TEMPORAL_CONFIG_FILE`` or the default location, and ``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*``, ``TEMPORAL_PROFILE``), so a
cluster set up for the ``temporal`` CLI works here unchanged. ``REFUNDFLOW_TEMPORAL_ADDRESS`` and
``REFUNDFLOW_TEMPORAL_NAMESPACE`` win when set. With neither, a local dev server is assumed.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import Runtime

from refundflow.payload_codec import encrypted_data_converter
from refundflow.settings import Settings
from refundflow.tracing import client_interceptors

LOCAL_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"


class ConnectionSettingsError(ValueError):
    """The Temporal client configuration (file or environment) cannot be used."""


def connect_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``Client.connect`` for these settings (without the converter)."""
    try:
        profile = ClientConfigProfile.load(
            profile=settings.temporal_profile,
            config_source=settings.temporal_config_file,
        )
    except Exception as exc:  # the bridge raises plain RuntimeErrors on a bad file
        raise ConnectionSettingsError(f"Temporal client configuration: {exc}") from exc
    options: dict[str, Any] = dict(profile.to_client_connect_config())
    if settings.temporal_address:
        options["target_host"] = settings.temporal_address
    if settings.temporal_namespace:
        options["namespace"] = settings.temporal_namespace
    options.setdefault("target_host", LOCAL_ADDRESS)
    options.setdefault("namespace", DEFAULT_NAMESPACE)
    return options


def describe_target(settings: Settings) -> str:
    """Where these settings connect, for messages (never the API key)."""
    try:
        options = connect_options(settings)
    except ConnectionSettingsError:
        return "Temporal (configuration unreadable)"
    tls = " (TLS)" if options.get("tls") else ""
    return f"Temporal at {options['target_host']}, namespace {options['namespace']}{tls}"


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A client with the data converter every refundflow process uses (pydantic, payloads
    encrypted with the payload keys); ``runtime`` carries a worker's metrics exporter. Raises
    :class:`refundflow.crypto.KeyringError` without usable payload keys: nothing reaches
    Temporal in plaintext."""
    converter = encrypted_data_converter(settings.payload_keyring())
    options = connect_options(settings)
    if runtime is not None:
        options["runtime"] = runtime
    options["interceptors"] = client_interceptors(settings)
    return await Client.connect(options.pop("target_host"), data_converter=converter, **options)
