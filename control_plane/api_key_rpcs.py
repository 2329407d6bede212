"""AuthService's API key methods (a mixin of control_plane.auth_service.AuthService): each acts on the caller's own
keys. Which keys may call them is api_key_scopes' table (minting and revoking need `admin`)."""

from __future__ import annotations

import grpc

from control_plane.accounts import AccountStore
from control_plane.api_keys import ApiKeyNotFound, ApiKeyRefused, scopes_of
from control_plane.converters import timestamp
from control_plane.db_calls import in_db_thread
from control_plane.grpc_errors import abort
from control_plane.models import ApiKey
from protos import control_plane_pb2
from protos.auth import current_principal


def api_key_to_proto(row: ApiKey) -> control_plane_pb2.ApiKey:
    return control_plane_pb2.ApiKey(id=row.id, name=row.name, scopes=scopes_of(row), prefix=row.prefix,
                                    created_at=timestamp(row.created_at), last_used_at=timestamp(row.last_used_at))


class ApiKeyRpcs:
    _accounts: AccountStore

    async def CreateApiKey(self, request, context):
        owner = current_principal.get().username
        try:
            key, row = await in_db_thread(self._accounts.api_keys.create, owner, request.name, list(request.scopes))
        except ApiKeyRefused as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.field)
        return control_plane_pb2.CreateApiKeyResponse(api_key=api_key_to_proto(row), key=key)

    async def ListApiKeys(self, request, context):
        rows = await in_db_thread(self._accounts.api_keys.list, current_principal.get().username)
        return control_plane_pb2.ListApiKeysResponse(api_keys=[api_key_to_proto(row) for row in rows])

    async def DeleteApiKey(self, request, context):
        try:
            await in_db_thread(self._accounts.api_keys.delete, current_principal.get().username, request.id)
        except ApiKeyNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "id")
        return control_plane_pb2.DeleteApiKeyResponse(id=request.id)
