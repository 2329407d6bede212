"""Users' saved config templates."""

from __future__ import annotations

import uuid

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from control_plane.models import SavedTemplate


class TemplateStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def save(self, owner: str, name: str, task_type: str, config_json: str) -> SavedTemplate:
        template = SavedTemplate(id=uuid.uuid4().hex, owner=owner, name=name, type=task_type, config_json=config_json)
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(template)
            session.commit()
        return template

    def owned_by(self, owner: str) -> list[SavedTemplate]:
        with Session(self.engine) as session:
            query = select(SavedTemplate).where(SavedTemplate.owner == owner).order_by(col(SavedTemplate.created_at))
            return list(session.exec(query).all())

    def delete(self, template_id: str, owner: str) -> bool:
        """Deletes one of `owner`'s templates; False when there is no such template of theirs."""
        with Session(self.engine) as session:
            template = session.get(SavedTemplate, template_id)
            if template is None or template.owner != owner:
                return False
            session.delete(template)
            session.commit()
        return True


def delete_templates_of(session: Session, owner: str) -> None:
    """Within the caller's transaction (a deleted user): every template of `owner` goes."""
    session.execute(delete(SavedTemplate).where(col(SavedTemplate.owner) == owner))
