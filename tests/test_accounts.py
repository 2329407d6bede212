"""The account store on SQLite and on the PostgreSQL server at 127.0.0.1:5432: deleting a user leaves nothing that a
new user of the same name could inherit. (The same through the whole system: tests/test_auth.py.)"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from control_plane.accounts import AccountError, AccountStore, valid_username
from control_plane.task_store import TaskStore
from control_plane.template_store import TemplateStore

def test_deleting_a_user_removes_tokens_templates_counters_and_tombstones_tasks(engine):
    accounts, tasks, templates = AccountStore(engine, timedelta(hours=1)), TaskStore(engine), TemplateStore(engine)
    accounts.create_user("ann", "ann-password")
    accounts.create_user("ben", "ben-password")
    token, _, _ = accounts.login("ann", "ann-password")
    with pytest.raises(AccountError):
        accounts.login("ann", "wrong-password", client_address="192.0.2.1")
    first = tasks.create_task(uuid.uuid4().hex, "sft", "{}", "/tmp/a", owner="ann")
    second = tasks.create_task(uuid.uuid4().hex, "sft", "{}", "/tmp/b", owner="ann")
    bens = tasks.create_task(uuid.uuid4().hex, "sft", "{}", "/tmp/c", owner="ben")
    templates.save("ann", "mine", "sft", "{}")
    templates.save("ben", "his", "sft", "{}")
    assert accounts.throttle.state("user_address", "ann", "192.0.2.1") == (1, 0.0)

    assert accounts.delete_user("ann") is True
    assert accounts.authenticate(token) is None
    assert templates.owned_by("ann") == [] and [t.name for t in templates.owned_by("ben")] == ["his"]
    owners = {tasks.get_task(first.id).owner, tasks.get_task(second.id).owner}
    assert len(owners) == 1  # one deletion, one tombstone
    (owner,) = owners
    assert owner.startswith("deleted:ann:") and not valid_username(owner)
    assert tasks.get_task(bens.id).owner == "ben"
    assert accounts.throttle.state("user_address", "ann", "192.0.2.1") is None
    assert accounts.throttle.state("user", "ann") is None
    assert accounts.throttle.state("address", "", "192.0.2.1") == (1, 0.0)  # the address's count is not the user's

    accounts.create_user("ann", "new-ann-password")
    assert tasks.list_tasks(owner="ann") == ([], 0)
    assert templates.owned_by("ann") == []
    assert {t.id for t in tasks.list_tasks()[0]} == {first.id, second.id, bens.id}  # what admins see
    # Deleting the new ann too gives her (no) tasks another tombstone; the old ones keep theirs.
    tasks.create_task(uuid.uuid4().hex, "sft", "{}", "/tmp/d", owner="ann")
    accounts.delete_user("ann")
    assert tasks.get_task(first.id).owner == owner
    assert len({t.owner for t in tasks.list_tasks()[0] if t.owner.startswith("deleted:ann:")}) == 2
    assert accounts.delete_user("ann") is False
