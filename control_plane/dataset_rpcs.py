"""FinetuneService's dataset and model methods (a mixin of control_plane.finetune_service.FinetuneService)."""

from __future__ import annotations

import json
from typing import AsyncIterator

import grpc

from control_plane.auth_service import caller
from control_plane.converters import timestamp
from control_plane.db_calls import in_db_thread
from control_plane.dataset_service import DatasetInUse, DatasetNotFound, DatasetService, UploadRefused, UploadTooLarge
from control_plane.grpc_errors import abort
from control_plane.model_catalog import ModelCatalog
from control_plane.models import Dataset
from protos import control_plane_pb2


class DatasetRpcs:
    _datasets: DatasetService
    _catalog: ModelCatalog

    async def UploadDataset(self, request_iterator, context):
        principal = caller()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "an upload starts with its header (name, type)",
                        "type")
        try:
            dataset = await self._datasets.upload(principal.username, first.header.name, first.header.type,
                                                  _data(request_iterator))
        except UploadRefused as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.field)
        except UploadTooLarge as exc:
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), "file")
        return dataset_to_proto(dataset)

    async def ListDatasets(self, request, context):
        datasets = await in_db_thread(self._datasets.list, _owner_filter(), request.type)
        return control_plane_pb2.ListDatasetsResponse(datasets=[dataset_to_proto(d) for d in datasets])

    async def GetDataset(self, request, context):
        try:
            dataset = await in_db_thread(self._datasets.get, request.dataset_id, _owner_filter())
        except DatasetNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "dataset_id")
        return dataset_to_proto(dataset, detail=True)

    async def DeleteDataset(self, request, context):
        try:
            await in_db_thread(self._datasets.delete, request.dataset_id, _owner_filter())
        except DatasetNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "dataset_id")
        except DatasetInUse as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "dataset_id")
        return control_plane_pb2.DeleteDatasetResponse(dataset_id=request.dataset_id)

    async def ListModels(self, request, context):
        def live_inventories():
            return self._catalog.inventories({agent.id for agent in self._scheduler.live_agents()})

        entries: dict[str, control_plane_pb2.ModelEntry] = {}
        for inventory in await in_db_thread(live_inventories):
            for model in inventory.models:
                entry = entries.setdefault(model["name"], control_plane_pb2.ModelEntry(
                    name=model["name"], kind=model.get("kind", ""), size_bytes=int(model.get("size_bytes") or 0)))
                entry.agent_ids.append(inventory.agent_id)
        return control_plane_pb2.ListModelsResponse(models=[entries[name] for name in sorted(entries)])


def _owner_filter() -> str | None:
    """Whose datasets the caller sees: their own; an admin, everyone's."""
    principal = caller()
    return None if principal.is_admin else principal.username


async def _data(request_iterator) -> AsyncIterator[bytes]:
    async for message in request_iterator:
        if message.WhichOneof("part") == "data":
            yield message.data


def dataset_to_proto(dataset: Dataset, *, detail: bool = False) -> control_plane_pb2.Dataset:
    proto = control_plane_pb2.Dataset(
        id=dataset.id, name=dataset.name, type=dataset.type, sha256=dataset.sha256, size_bytes=dataset.size_bytes,
        rows=dataset.rows, created_at=timestamp(dataset.created_at), owner=dataset.owner)
    if detail:
        proto.stats_json = dataset.stats_json
        proto.preview_json.extend(json.dumps(row, ensure_ascii=False) for row in json.loads(dataset.preview_json))
    return proto
