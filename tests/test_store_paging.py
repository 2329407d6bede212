"""The task list's keyset pages and the queue positions, on SQLite and on the PostgreSQL server at 127.0.0.1:5432."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest

from control_plane.list_cursor import BadPageToken, ListCursor
from control_plane.models import TaskValidation, utcnow
from control_plane.state_machine import TaskStatus
from control_plane.task_store import TaskStore


@pytest.fixture
def store(engine):
    return TaskStore(engine)


def _add(store: TaskStore, task_type: str = "sft", owner: str = "ann", **scheduling):
    return store.create_task(uuid.uuid4().hex, task_type, "{}", "/tmp/out", owner=owner, **scheduling)


def _walk(store: TaskStore, limit: int, **filters) -> list[str]:
    """Every page from the first, following next_cursor; the ids in the order served."""
    seen, cursor = [], None
    while True:
        page = store.list_page(limit=limit, after=cursor, **filters)
        seen += [task.id for task in page.tasks]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def test_keyset_pages_serve_every_task_once_while_tasks_are_being_added(store):
    before = [_add(store).id for _ in range(60)]
    stop = threading.Event()
    added: list[str] = []

    def keep_adding():
        while not stop.is_set():
            added.append(_add(store).id)

    writer = threading.Thread(target=keep_adding)
    writer.start()
    try:
        seen, cursor = [], None
        while True:
            page = store.list_page(limit=7, after=cursor)
            seen += [task.id for task in page.tasks]
            _add(store)  # and one more between every two pages, in this thread too
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    finally:
        stop.set()
        writer.join()
    assert len(seen) == len(set(seen)), "a task was served twice"
    assert set(before) <= set(seen), "a task that was there all along was skipped"
    assert set(seen) <= set(before) | set(added) | {t.id for t in store.list_page(limit=500).tasks}
    # Newest first: the tasks that were there all along come in reverse order of creation.
    assert [task_id for task_id in seen if task_id in set(before)] == before[::-1]


def test_keyset_pages_of_filtered_lists_match_one_big_page(store):
    for index in range(40):
        task = _add(store, task_type="dpo" if index % 3 == 0 else "sft", owner="ben" if index % 4 == 0 else "ann")
        if index % 2:
            store.transition(task.id, TaskStatus.STOPPED, "user_stop")
    for filters in ({}, {"status": "stopped"}, {"status": "queued"}, {"task_type": "dpo"}, {"owner": "ben"},
                    {"owner": "ann", "status": "stopped", "task_type": "sft"}):
        everything = store.list_page(limit=500, **filters)
        assert _walk(store, 3, **filters) == [task.id for task in everything.tasks], filters
        assert everything.total == len(everything.tasks) and everything.next_cursor is None


def test_offset_still_pages_and_the_last_page_has_no_cursor(store):
    ids = [_add(store).id for _ in range(5)][::-1]
    page = store.list_page(limit=2, offset=2)
    assert [t.id for t in page.tasks] == ids[2:4] and page.total == 5 and page.next_cursor is not None
    last = store.list_page(limit=2, after=page.next_cursor)
    assert [t.id for t in last.tasks] == ids[4:] and last.next_cursor is None
    assert store.list_page(limit=5).next_cursor is None  # exactly full: nothing after it


def test_a_page_token_survives_the_round_trip_and_a_forged_one_is_refused():
    cursor = ListCursor(utcnow(), uuid.uuid4().hex)
    assert ListCursor.parse(cursor.token()) == cursor
    for bad in ("", "x", "not base64!", "W10", "eyJhIjoxfQ", "A" * 500, ListCursor(utcnow(), "t").token()[:-3]):
        with pytest.raises(BadPageToken):
            ListCursor.parse(bad)


# --- queue positions ----------------------------------------------------------------------------------------------

def _assert_positions_agree(store: TaskStore) -> dict[str, int]:
    """Positions from the indexed counts (GetTask's and the list's) equal a reading of the whole queue."""
    reference = store.queue_positions()
    page = store.list_page(limit=500)
    assert page.queue_positions == reference
    for task in page.tasks:
        assert store.task_detail(task.id).queue_position == reference.get(task.id, 0)
        assert store.queue_position(task.id) == reference.get(task.id, 0)
    return reference


def test_queue_positions_follow_priority_then_creation(store):
    low = _add(store, priority=0)
    high = _add(store, priority=5)
    low2 = _add(store, priority=0)
    mid = _add(store, priority=2)
    high2 = _add(store, priority=5)
    positions = _assert_positions_agree(store)
    assert [positions[t.id] for t in (high, high2, mid, low, low2)] == [1, 2, 3, 4, 5]
    store.transition(high.id, TaskStatus.STARTING, "placed")  # leaves the queue: everyone behind moves up
    positions = _assert_positions_agree(store)
    assert high.id not in positions and [positions[t.id] for t in (high2, mid, low, low2)] == [1, 2, 3, 4]


def test_queue_positions_break_ties_of_the_same_instant_by_id(store):
    same = utcnow() - timedelta(minutes=1)
    ids = sorted(uuid.uuid4().hex for _ in range(4))
    for task_id in reversed(ids):  # stored in the other order
        store.create_task(task_id, "sft", "{}", "/tmp/o", priority=1)
        store.set_fields(task_id, created_at=same)
    positions = _assert_positions_agree(store)
    assert [positions[task_id] for task_id in ids] == [1, 2, 3, 4]


def test_tasks_whose_data_are_being_checked_have_no_position_and_do_not_count(store):
    first = _add(store)
    checking = store.create_task(uuid.uuid4().hex, "sft", "{}", "/tmp/c", validation=TaskValidation(state="pending"))
    checking_high = store.create_task(uuid.uuid4().hex, "sft", "{}", "/tmp/d", priority=9,
                                      validation=TaskValidation(state="pending"))
    last = store.create_task(uuid.uuid4().hex, "sft", "{}", "/tmp/e", validation=TaskValidation(state="passed"))
    positions = _assert_positions_agree(store)
    assert positions == {first.id: 1, last.id: 2}
    assert store.task_detail(checking.id).queue_position == 0 and store.task_detail(checking_high.id).queue_position == 0
    store.finish_validation(checking_high.id, True, 3)
    assert _assert_positions_agree(store) == {checking_high.id: 1, first.id: 2, last.id: 3}


def test_positions_on_a_page_of_many_priorities_agree_with_the_queue(store):
    tasks = [_add(store, priority=index % 3) for index in range(30)]
    for task in tasks[::7]:
        store.transition(task.id, TaskStatus.STOPPED, "user_stop")
    _assert_positions_agree(store)
    for limit in (4, 9):  # page by page, each page's positions are the queue's
        reference, cursor = store.queue_positions(), None
        while True:
            page = store.list_page(limit=limit, after=cursor)
            assert page.queue_positions == {t.id: reference[t.id] for t in page.tasks if t.id in reference}
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
