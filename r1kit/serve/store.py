"""One SQLite file: API keys (hashed), per-key usage, and the web chat's conversations.

A key is shown once, when created: `sk-r1-<id>-<secret>`. The table keeps its id, a random
salt and sha256(salt + key + pepper); the pepper comes from $R1KIT_KEY_PEPPER (empty unless
set), so a leaked database alone is not enough to check guesses when one is set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, salt TEXT NOT NULL, hash TEXT NOT NULL,
  created REAL NOT NULL, revoked REAL, quota_tokens INTEGER, rpm INTEGER);
CREATE TABLE IF NOT EXISTS usage (
  key_id TEXT NOT NULL, ts REAL NOT NULL, model TEXT NOT NULL, endpoint TEXT NOT NULL,
  prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS usage_key ON usage(key_id);
CREATE TABLE IF NOT EXISTS conversations (
  id TEXT PRIMARY KEY, key_id TEXT NOT NULL, title TEXT NOT NULL, created REAL NOT NULL,
  updated REAL NOT NULL, messages TEXT NOT NULL);
"""
NO_KEY = "-"  # the key id recorded when auth is off


def default_db_path() -> Path:
    """$R1KIT_DB, else the user's data dir: $XDG_DATA_HOME/r1kit/r1kit.db (~/.local/share)."""
    if os.environ.get("R1KIT_DB"):
        return Path(os.environ["R1KIT_DB"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "r1kit" / "r1kit.db"


@dataclass
class Key:
    id: str
    name: str
    created: float
    revoked: float | None
    quota_tokens: int | None
    rpm: int | None


def _hash(salt: str, key: str) -> str:
    pepper = os.environ.get("R1KIT_KEY_PEPPER", "")
    return hashlib.sha256((salt + key + pepper).encode()).hexdigest()


class Store:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_db_path()
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(SCHEMA)

    def _q(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock, self._db:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ keys
    def create_key(
        self, name: str = "", quota_tokens: int | None = None, rpm: int | None = None
    ) -> tuple[str, Key]:
        kid = secrets.token_hex(4)
        key = f"sk-r1-{kid}-{secrets.token_urlsafe(24)}"
        salt = secrets.token_hex(16)
        now = time.time()
        self._q(
            "INSERT INTO keys VALUES (?,?,?,?,?,?,?,?)",
            (kid, name, salt, _hash(salt, key), now, None, quota_tokens, rpm),
        )
        return key, Key(kid, name, now, None, quota_tokens, rpm)

    def _key(self, row: sqlite3.Row) -> Key:
        return Key(row["id"], row["name"], row["created"], row["revoked"], row["quota_tokens"],
                   row["rpm"])  # fmt: skip

    def list_keys(self) -> list[Key]:
        return [self._key(r) for r in self._q("SELECT * FROM keys ORDER BY created")]

    def find_key(self, key: str) -> Key | None:
        """The key's record if `key` is one of ours (revoked or not), else None."""
        parts = key.split("-")
        if len(parts) < 4 or parts[0] != "sk" or parts[1] != "r1":
            return None
        rows = self._q("SELECT * FROM keys WHERE id = ?", (parts[2],))
        if not rows or not hmac.compare_digest(rows[0]["hash"], _hash(rows[0]["salt"], key)):
            return None
        return self._key(rows[0])

    def revoke(self, key_id: str) -> bool:
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (time.time(), key_id),
            )
            return cur.rowcount > 0

    # ------------------------------------------------------------------ usage
    def record(self, key_id: str, model: str, endpoint: str, prompt: int, completion: int,
               reasoning: int) -> None:  # fmt: skip
        self._q(
            "INSERT INTO usage VALUES (?,?,?,?,?,?,?)",
            (key_id, time.time(), model, endpoint, prompt, completion, reasoning),
        )

    def tokens_used(self, key_id: str) -> int:
        rows = self._q(
            "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS t FROM usage "
            "WHERE key_id = ?",
            (key_id,),
        )
        return int(rows[0]["t"])

    def usage(self) -> list[dict]:
        """Per key: requests and prompt, completion, reasoning tokens."""
        rows = self._q(
            "SELECT k.id, k.name, k.revoked, COUNT(u.ts) AS requests, "
            "COALESCE(SUM(u.prompt_tokens), 0) AS prompt_tokens, "
            "COALESCE(SUM(u.completion_tokens), 0) AS completion_tokens, "
            "COALESCE(SUM(u.reasoning_tokens), 0) AS reasoning_tokens "
            "FROM keys k LEFT JOIN usage u ON u.key_id = k.id GROUP BY k.id ORDER BY k.created"
        )
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ conversations
    def save_conversation(self, key_id: str, conv_id: str | None, title: str,
                          messages: list[dict]) -> str:  # fmt: skip
        now = time.time()
        conv_id = conv_id or secrets.token_hex(8)
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE conversations SET title = ?, updated = ?, messages = ? "
                "WHERE id = ? AND key_id = ?",
                (title, now, json.dumps(messages), conv_id, key_id),
            )
            if cur.rowcount == 0:
                self._db.execute(
                    "INSERT INTO conversations VALUES (?,?,?,?,?,?)",
                    (conv_id, key_id, title, now, now, json.dumps(messages)),
                )
        return conv_id

    def conversations(self, key_id: str) -> list[dict]:
        rows = self._q(
            "SELECT id, title, updated FROM conversations WHERE key_id = ? ORDER BY updated DESC",
            (key_id,),
        )
        return [dict(r) for r in rows]

    def conversation(self, key_id: str, conv_id: str) -> dict | None:
        rows = self._q("SELECT * FROM conversations WHERE id = ? AND key_id = ?", (conv_id, key_id))
        if not rows:
            return None
        d = dict(rows[0])
        d["messages"] = json.loads(d["messages"])
        return d

    def rename_conversation(self, key_id: str, conv_id: str, title: str) -> bool:
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE conversations SET title = ? WHERE id = ? AND key_id = ?",
                (title, conv_id, key_id),
            )
            return cur.rowcount > 0

    def delete_conversation(self, key_id: str, conv_id: str) -> bool:
        with self._lock, self._db:
            cur = self._db.execute(
                "DELETE FROM conversations WHERE id = ? AND key_id = ?", (conv_id, key_id)
            )
            return cur.rowcount > 0
