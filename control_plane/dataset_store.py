"""Dataset records (control_plane.models.Dataset) and who may see them: their owner, and admins."""

from __future__ import annotations

import uuid
from typing import Iterable

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from control_plane.models import Dataset


class DatasetNotFound(LookupError):
    def __init__(self, dataset_id: str):
        super().__init__(f"dataset {dataset_id!r} not found")
        self.dataset_id = dataset_id


class DatasetStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, *, owner: str, name: str, type: str, sha256: str, size_bytes: int, rows: int, suffix: str,
            stats_json: str, preview_json: str) -> Dataset:
        """A new record, or the owner's existing one for the same bytes, type and name (an upload repeated)."""
        with Session(self._engine) as session:
            same = session.exec(select(Dataset).where(
                col(Dataset.owner) == owner, col(Dataset.sha256) == sha256, col(Dataset.type) == type,
                col(Dataset.name) == name)).first()
            if same is not None:
                return same
            dataset = Dataset(id=uuid.uuid4().hex, owner=owner, name=name, type=type, sha256=sha256,
                              size_bytes=size_bytes, rows=rows, suffix=suffix, stats_json=stats_json,
                              preview_json=preview_json)
            session.add(dataset)
            session.commit()
            session.refresh(dataset)
            return dataset

    def get(self, dataset_id: str, owner: str | None = None) -> Dataset:
        """The dataset; `owner` given (a non-admin caller): only theirs, others' do not exist for them."""
        with Session(self._engine) as session:
            dataset = session.get(Dataset, dataset_id)
        if dataset is None or (owner is not None and dataset.owner != owner):
            raise DatasetNotFound(dataset_id)
        return dataset

    def list(self, owner: str | None = None, type: str = "") -> list[Dataset]:
        query = select(Dataset).order_by(col(Dataset.created_at).desc())
        if owner is not None:
            query = query.where(col(Dataset.owner) == owner)
        if type:
            query = query.where(col(Dataset.type) == type)
        with Session(self._engine) as session:
            return list(session.exec(query).all())

    def delete(self, dataset_id: str) -> bool:
        """Removes the record; True when no other record uses its blob any more (the caller deletes the blob)."""
        with Session(self._engine) as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None:
                raise DatasetNotFound(dataset_id)
            sha256 = dataset.sha256
            session.delete(dataset)
            session.commit()
            others = session.exec(select(func.count()).select_from(Dataset).where(col(Dataset.sha256) == sha256)).one()
        return others == 0

    def by_ids(self, ids: Iterable[str]) -> dict[str, Dataset]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        with Session(self._engine) as session:
            return {d.id: d for d in session.exec(select(Dataset).where(col(Dataset.id).in_(wanted))).all()}
