"""JsonText: a column that holds one JSON document. Python code reads and writes it as a JSON string, as it always
has; SQLite stores that string as TEXT, PostgreSQL stores the document as `jsonb` (checked on the way in, compact,
queryable with its JSON operators)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class JsonText(TypeDecorator):
    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(Text())

    # Only PostgreSQL converts: elsewhere the string goes to the driver untouched (no per-row call on the hot
    # ingestion path, which hands SQLite the processors of each column itself).
    def bind_processor(self, dialect: Dialect):
        return super().bind_processor(dialect) if dialect.name == "postgresql" else None

    def result_processor(self, dialect: Dialect, coltype: Any):
        return super().result_processor(dialect, coltype) if dialect.name == "postgresql" else None

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, str):
            return value  # None (SQL NULL), or a document already parsed
        # NaN and Infinity are not JSON and jsonb refuses them: they are stored as null rather than failing a batch.
        return json.loads(value, parse_constant=lambda _name: None)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        # The driver hands jsonb back parsed; callers get it as JSON text again (jsonb keeps no key order or spacing).
        return None if value is None else json.dumps(value, ensure_ascii=False)
