"""The models the agents hold (reported in registration and heartbeats), and what the models a task's config names
(`model_name_or_path`, and the other fields of trainers.registry.MODEL_FIELDS) mean for placement.

A value that is a model's name or path on some agents places the task on those agents only. An agent path
(absolute, `./`, `../`, `~`) is the placed agent's business. Anything else is a hub id: fine where an agent can reach
a hub, refused at submit when none can (and no agent holds it), so that a typo is an error now, not a failed run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from google.protobuf.json_format import MessageToDict
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from control_plane.models import AgentInventory, utcnow
from trainers.registry import model_values

_AGENT_PATH_PREFIXES = ("/", "./", "../", "~")


@dataclass(frozen=True)
class Inventory:
    agent_id: str
    models: list[dict] = field(default_factory=list)  # ModelInfo as dicts: name, kind, size_bytes, path
    hub_access: bool = False

    def holds(self, value: str) -> bool:
        return any(value in (model.get("name"), model.get("path")) for model in self.models)


class ModelCatalog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, agent_id: str, models, hub_access: bool) -> None:
        """Stores an agent's report (ModelInfo messages), replacing the last one."""
        models_json = json.dumps([MessageToDict(m, preserving_proto_field_name=True,
                                                always_print_fields_with_no_presence=True) for m in models])
        with Session(self._engine) as session:
            row = session.get(AgentInventory, agent_id) or AgentInventory(agent_id=agent_id)
            row.models_json, row.hub_access, row.updated_at = models_json, hub_access, utcnow()
            session.add(row)
            session.commit()

    def inventories(self, agent_ids: set[str] | None = None) -> list[Inventory]:
        with Session(self._engine) as session:
            rows = session.exec(select(AgentInventory)).all()
        return [Inventory(row.agent_id, json.loads(row.models_json or "[]"), row.hub_access) for row in rows
                if agent_ids is None or row.agent_id in agent_ids]


def is_agent_path(value: str) -> bool:
    return value.startswith(_AGENT_PATH_PREFIXES)


def holders(value: str | None, inventories: list[Inventory]) -> set[str] | None:
    """The agents a task naming this model may run on; None: any agent (a path on the agent, a hub id, no model)."""
    if not value or is_agent_path(value):
        return None
    found = {inv.agent_id for inv in inventories if inv.holds(value)}
    return found or None


def config_holders(config: dict, inventories: list[Inventory]) -> set[str] | None:
    """The agents holding every held model the config names (an empty set: no agent holds them all); None: any
    agent."""
    allowed: set[str] | None = None
    for _, value in model_values(config):
        found = holders(value, inventories)
        if found is not None:
            allowed = found if allowed is None else allowed & found
    return allowed


def unavailable_model_message(config: dict, inventories: list[Inventory]) -> tuple[str, str] | None:
    """(field, why) when no agent can run a task naming these models, or None when one can (or no agent has
    reported yet)."""
    if not inventories:
        return None
    named = [(name, value) for name, value in model_values(config) if not is_agent_path(value)]
    for name, value in named:
        if any(inv.holds(value) or inv.hub_access for inv in inventories):
            continue
        held = sorted({model["name"] for inv in inventories for model in inv.models})
        listing = ", ".join(held) if held else "none"
        return name, (f"{name}: no agent holds a model named {value!r} and none can reach a model hub "
                      f"(models the agents hold: {listing}; GET /api/finetune/models). Put it in an agent's models "
                      "directory, or give a path on the agent (absolute, or ./relative to its workspace)")
    if config_holders(config, inventories) == set():
        models = " and ".join(repr(value) for _, value in named)
        return named[-1][0], (f"{named[-1][0]}: no single agent holds {models}; put them in the models directory of "
                              "one agent")
    return None
