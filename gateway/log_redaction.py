"""Defence in depth for access logs: the value of any query parameter whose name looks like a credential (token,
key, secret, password, ...) is replaced before uvicorn's access logger writes the line. The gateway refuses such
tokens anyway (gateway.raw_params); this keeps one from reaching the logs even on the way to that 400."""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "[redacted]"
# A name containing one of these words (also percent-encoded, e.g. access%5Ftoken), up to the next '&', space or quote.
_SECRET_QUERY_VALUE = re.compile(
    r"(?P<name>[?&;][^=&\s\"]*(?:token|key|secret|passw|auth|credential|session|signature)[^=&\s\"]*=)[^&\s\"]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return _SECRET_QUERY_VALUE.sub(lambda m: m.group("name") + REDACTED, text)


class RedactQuerySecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn passes the path with its query as one of the record's args; the message may carry it too.
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install(logger_name: str = ACCESS_LOGGER) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
        logger.addFilter(RedactQuerySecrets())
