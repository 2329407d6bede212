"""What each API key scope allows: the one table of gRPC method -> the scope a key needs to call it.

Scopes nest: `submit` includes `read`, `admin` includes both. A key acts as its owner, so `admin` opens only what
the owner may do anyway (user management stays the admins'). A method missing from the table needs `admin`
(fail closed); tests/test_api_keys.py fails when a client-facing RPC has no entry, so a new one cannot be forgotten.
Sessions (password logins) are not limited by scopes.
"""

from __future__ import annotations

from typing import Iterable

READ, SUBMIT, ADMIN = "read", "submit", "admin"
SCOPES = (READ, SUBMIT, ADMIN)  # narrowest first
_INCLUDES = {READ: {READ}, SUBMIT: {READ, SUBMIT}, ADMIN: {READ, SUBMIT, ADMIN}}

_PACKAGE = "bugagaric.finetune.v1"


def _methods(service: str, scope: str, *names: str) -> dict[str, str]:
    return {f"/{_PACKAGE}.{service}/{name}": scope for name in names}


METHOD_SCOPES: dict[str, str] = {
    **_methods(
        "FinetuneService", READ,
        "GetTask", "ListTasks", "ListTemplates", "GetTaskLogs", "StreamTaskLogs", "GetTaskMetrics", "GetSystemHealth",
        "ListDatasets", "GetDataset", "ListModels", "ListArtifacts", "DownloadArtifact", "DownloadModel",
    ),
    **_methods(
        "FinetuneService", SUBMIT,
        "StartTask", "StopTask", "ResumeTask", "UpdateTaskPriority", "DeleteTask", "SaveTemplate", "DeleteTemplate",
        # A dry run of a submission: it takes an agent's time like one.
        "ValidateTask",
        "UploadDataset", "DeleteDataset", "ExportTask", "Chat", "CloseChat",
    ),
    # Login is public; Logout with a key ends no session (a key is revoked with DeleteApiKey).
    **_methods("AuthService", READ, "Login", "Logout", "WhoAmI", "ListApiKeys"),
    # Minting or revoking keys, and user management (which the service still limits to admins).
    **_methods("AuthService", ADMIN, "ListUsers", "CreateUser", "DeleteUser", "CreateApiKey", "DeleteApiKey"),
    # The caller's own webhook endpoints (control_plane/webhook_rpcs.py).
    **_methods("WebhookService", READ, "ListWebhooks", "ListWebhookDeliveries"),
    **_methods("WebhookService", SUBMIT, "CreateWebhook", "DeleteWebhook"),
}


def scope_needed(method: str) -> str:
    """The scope a key needs for the full gRPC method name ("/package.Service/Method")."""
    return METHOD_SCOPES.get(method, ADMIN)


def allows(scopes: Iterable[str], needed: str) -> bool:
    return any(needed in _INCLUDES.get(scope, ()) for scope in scopes)


def invalid_scopes(scopes: Iterable[str]) -> list[str]:
    return [scope for scope in scopes if scope not in SCOPES]
