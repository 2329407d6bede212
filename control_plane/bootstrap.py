"""First start: the admin account, so that a fresh system can be logged into."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from control_plane.accounts import AccountStore

log = logging.getLogger(__name__)


def ensure_admin(accounts: AccountStore, username: str, password: str, password_file: Path) -> None:
    """Creates the admin when there are no users. A generated password goes to an owner-only file, never a log."""
    if accounts.has_users():
        return
    generated = not password
    password = password or secrets.token_urlsafe(12)
    accounts.create_user(username, password, "admin")
    if generated:
        password_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{username} {password}\n")
        os.chmod(password_file, 0o600)
        log.info("created admin %r; its generated password is in %s (readable by the owner only)", username, password_file)
    else:
        log.info("created admin %r with the password from BUGAGARIC_ADMIN_PASSWORD", username)
