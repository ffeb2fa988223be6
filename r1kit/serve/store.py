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

from r1kit.errors import R1kitError
from r1kit.serve.limits import DEFAULT_PRICES, Prices, grant

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, salt TEXT NOT NULL, hash TEXT NOT NULL,
  created REAL NOT NULL, revoked REAL, quota_tokens INTEGER, rpm INTEGER);
CREATE TABLE IF NOT EXISTS usage (
  key_id TEXT NOT NULL, ts REAL NOT NULL, model TEXT NOT NULL, endpoint TEXT NOT NULL,
  prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS usage_key ON usage(key_id);
CREATE TABLE IF NOT EXISTS hits (key_id TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS hits_key ON hits(key_id, ts);
CREATE TABLE IF NOT EXISTS conversations (
  id TEXT PRIMARY KEY, key_id TEXT NOT NULL, title TEXT NOT NULL, created REAL NOT NULL,
  updated REAL NOT NULL, messages TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS held (
  owner TEXT NOT NULL, key_id TEXT NOT NULL, tokens INTEGER NOT NULL, money REAL NOT NULL,
  PRIMARY KEY (owner, key_id));
"""
# `held`: what each API process of `r1kit serve --api-workers` has reserved per key, kept with
# the key's reservation in the same transaction, so the reservations of one that dies (its
# requests never settle) are given back when it is restarted (`drop_owner`)
# Columns added after the first release, so older files gain them on open. Per key: running
# totals (tokens used, money spent) so a quota check reads one row, never the usage rows; what
# requests in flight have reserved (settled when they finish); an optional money credit, its
# currency and the key's rates (per 1M tokens). Per usage row: prompt tokens served from cache.
COLUMNS = {
    "keys": {
        "used_tokens": "INTEGER NOT NULL DEFAULT 0",
        "spent": "REAL NOT NULL DEFAULT 0",
        "reserved_tokens": "INTEGER NOT NULL DEFAULT 0",
        "reserved_money": "REAL NOT NULL DEFAULT 0",
        "credit": "REAL",
        "currency": "TEXT NOT NULL DEFAULT 'USD'",
        "price_prompt": "REAL",
        "price_cache_hit": "REAL",
        "price_completion": "REAL",
    },
    "usage": {"cache_hit_tokens": "INTEGER NOT NULL DEFAULT 0", "cost": "REAL NOT NULL DEFAULT 0"},
}
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
    used_tokens: int = 0
    spent: float = 0.0
    reserved_tokens: int = 0
    reserved_money: float = 0.0
    credit: float | None = None
    currency: str = "USD"
    prices: Prices = DEFAULT_PRICES["USD"]

    def tokens_left(self) -> int | None:
        """Tokens the quota still allows, reservations of requests in flight taken off."""
        if self.quota_tokens is None:
            return None
        return self.quota_tokens - self.used_tokens - self.reserved_tokens

    def money_left(self) -> float | None:
        if self.credit is None:
            return None
        return self.credit - self.spent - self.reserved_money


def _worst(prices: Prices, prompt_tokens: int, n: int, max_tokens: int) -> tuple[int, float]:
    """Tokens and money a request reserves: its prompt, every sample at max_tokens, and the
    prompt priced as a cache miss."""
    return prompt_tokens + n * max_tokens, prices.cost(prompt_tokens, 0, n * max_tokens)


def _hash(salt: str, key: str) -> str:
    pepper = os.environ.get("R1KIT_KEY_PEPPER", "")
    return hashlib.sha256((salt + key + pepper).encode()).hexdigest()


class Store:
    def __init__(self, path: str | Path | None = None, owner: str | None = None) -> None:
        """`owner`: this API process's name among several (its reservations are held under
        it, see `held`); None with one."""
        self.path = Path(path) if path else default_db_path()
        self.owner = owner
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # keys' hashes, usage and conversations: readable by the owner only (0600)
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._lock = threading.Lock()
            # every request ends in a commit on the event loop: WAL with synchronous=NORMAL
            # makes it a write to the log, not an fsync (durable across a crash of the server,
            # not of the machine's power)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._lock, self._db:
                self._db.executescript(SCHEMA)
                self._migrate()
        except IsADirectoryError:
            raise R1kitError(f"--db {self.path} is a directory: name a file in it") from None
        except (NotADirectoryError, FileExistsError):  # a file where a directory must be
            ups = (self.path.parent, *self.path.parent.parents)
            file = next((d for d in ups if d.exists() and not d.is_dir()), self.path.parent)
            raise R1kitError(f"--db {self.path}: {file} is a file, not a directory") from None
        except sqlite3.DatabaseError as err:  # another file given as --db: nothing written
            if isinstance(err, sqlite3.OperationalError):  # locked, I/O: not the user's path
                raise
            raise R1kitError(f"--db {self.path} is not an r1kit database ({err})") from None

    def _migrate(self) -> None:
        for table, cols in COLUMNS.items():
            have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for col, decl in cols.items():
                if col not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")
                    if col == "used_tokens":  # a file from before the running totals
                        self._db.execute(
                            "UPDATE keys SET used_tokens = (SELECT COALESCE(SUM("
                            "prompt_tokens + completion_tokens), 0) FROM usage "
                            "WHERE usage.key_id = keys.id)"
                        )

    def _q(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock, self._db:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ keys
    def create_key(
        self,
        name: str = "",
        quota_tokens: int | None = None,
        rpm: int | None = None,
        credit: float | None = None,
        currency: str = "USD",
        prices: Prices | None = None,
    ) -> tuple[str, Key]:
        """A new key; raises R1kitError for a limit that could never serve a request."""
        if quota_tokens is not None and quota_tokens < 1:
            raise R1kitError(f"--quota must be at least 1 token, not {quota_tokens}")
        if rpm is not None and rpm < 1:
            raise R1kitError(f"--rpm must be at least 1 request per minute, not {rpm}")
        if credit is not None and not credit > 0:
            raise R1kitError(f"--credit must be a positive amount, not {credit}")
        if prices is None:
            if currency not in DEFAULT_PRICES:
                raise R1kitError(f"no default prices for {currency!r}: give --price-* flags")
            prices = DEFAULT_PRICES[currency]
        if any(not p >= 0 for p in prices):
            raise R1kitError("prices must be >= 0")
        kid = secrets.token_hex(4)
        key = f"sk-r1-{kid}-{secrets.token_urlsafe(24)}"
        salt = secrets.token_hex(16)
        now = time.time()
        self._q(
            "INSERT INTO keys (id, name, salt, hash, created, revoked, quota_tokens, rpm, credit, "
            "currency, price_prompt, price_cache_hit, price_completion) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                kid,
                name,
                salt,
                _hash(salt, key),
                now,
                None,
                quota_tokens,
                rpm,
                credit,
                currency,
                *prices,
            ),
        )
        return key, self._key(self._q("SELECT * FROM keys WHERE id = ?", (kid,))[0])

    def _key(self, row: sqlite3.Row) -> Key:
        prices = (row["price_prompt"], row["price_cache_hit"], row["price_completion"])
        return Key(
            row["id"],
            row["name"],
            row["created"],
            row["revoked"],
            row["quota_tokens"],
            row["rpm"],
            row["used_tokens"],
            row["spent"],
            row["reserved_tokens"],
            row["reserved_money"],
            row["credit"],
            row["currency"],
            Prices(*prices) if None not in prices else DEFAULT_PRICES["USD"],
        )

    def get_key(self, key_id: str) -> Key | None:
        rows = self._q("SELECT * FROM keys WHERE id = ?", (key_id,))
        return self._key(rows[0]) if rows else None

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
    def reserve(self, key_id: str, prompt_tokens: int, n: int, max_tokens: int) -> int:
        """Reserve a request's worst case against the key's quota and credit in one write
        transaction (so concurrent requests, from any process, see each other) and return the
        max_tokens granted per sample (clamped to what is left; 0 when nothing is). Release it
        with `settle(..., reserved=(n, granted))`."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchall()
            if not rows:
                return max_tokens
            k = self._key(rows[0])
            granted = grant(k.tokens_left(), k.money_left(), k.prices, prompt_tokens, n, max_tokens)
            if granted > 0:
                toks, money = _worst(k.prices, prompt_tokens, n, granted)
                self._db.execute(
                    "UPDATE keys SET reserved_tokens = reserved_tokens + ?, "
                    "reserved_money = reserved_money + ? WHERE id = ?",
                    (toks, money, key_id),
                )
                self._hold(key_id, toks, money)
            return granted

    def _hold(self, key_id: str, tokens: int, money: float) -> None:
        """Count a reservation (negative: its release) under this process, in the caller's
        transaction."""
        if self.owner is not None and tokens:
            self._db.execute(
                "INSERT INTO held VALUES (?, ?, ?, ?) ON CONFLICT (owner, key_id) DO UPDATE "
                "SET tokens = tokens + excluded.tokens, money = money + excluded.money",
                (self.owner, key_id, tokens, money),
            )

    def drop_owner(self, owner: str) -> int:
        """Give back every reservation an API process that died held (its requests will never
        settle); returns the tokens given back."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT key_id, tokens, money FROM held WHERE owner = ?", (owner,)
            ).fetchall()
            for r in rows:
                self._db.execute(
                    "UPDATE keys SET reserved_tokens = MAX(0, reserved_tokens - ?), "
                    "reserved_money = MAX(0, reserved_money - ?) WHERE id = ?",
                    (r["tokens"], r["money"], r["key_id"]),
                )
            self._db.execute("DELETE FROM held WHERE owner = ?", (owner,))
            return sum(int(r["tokens"]) for r in rows)

    def settle(
        self,
        key_id: str,
        model: str,
        endpoint: str,
        prompt: int,
        completion: int,
        reasoning: int,
        cache_hit: int = 0,
        reserved: tuple[int, int] | None = None,
    ) -> None:
        """One usage row, the key's running totals, and the release of the request's
        reservation (`(n, max_tokens)` as granted by `reserve`), in one transaction."""
        with self._lock, self._db:
            rows = self._db.execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchall()
            prices = self._key(rows[0]).prices if rows else DEFAULT_PRICES["USD"]
            cost = prices.cost(prompt, cache_hit, completion)
            self._db.execute(
                "INSERT INTO usage (key_id, ts, model, endpoint, prompt_tokens, completion_tokens,"
                " reasoning_tokens, cache_hit_tokens, cost) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    key_id,
                    time.time(),
                    model,
                    endpoint,
                    prompt,
                    completion,
                    reasoning,
                    cache_hit,
                    cost,
                ),
            )
            toks, money = _worst(prices, prompt, *reserved) if reserved else (0, 0.0)
            self._db.execute(
                "UPDATE keys SET used_tokens = used_tokens + ?, spent = spent + ?, "
                "reserved_tokens = MAX(0, reserved_tokens - ?), "
                "reserved_money = MAX(0, reserved_money - ?) WHERE id = ?",
                (prompt + completion, cost, toks, money, key_id),
            )
            self._hold(key_id, -toks, -money)

    def release(self, key_id: str, prompt: int, reserved: tuple[int, int]) -> None:
        """Give back a reservation of a request that never started (no usage row)."""
        with self._lock, self._db:
            rows = self._db.execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchall()
            if rows:
                toks, money = _worst(self._key(rows[0]).prices, prompt, *reserved)
                self._db.execute(
                    "UPDATE keys SET reserved_tokens = MAX(0, reserved_tokens - ?), "
                    "reserved_money = MAX(0, reserved_money - ?) WHERE id = ?",
                    (toks, money, key_id),
                )
                self._hold(key_id, -toks, -money)

    def record(
        self,
        key_id: str,
        model: str,
        endpoint: str,
        prompt: int,
        completion: int,
        reasoning: int,
        cache_hit: int = 0,
    ) -> None:
        """Usage of a request that reserved nothing."""
        self.settle(key_id, model, endpoint, prompt, completion, reasoning, cache_hit)

    def hit(self, key_id: str, rpm: int, window_s: float = 60.0) -> float | None:
        """Count a request against the key's `rpm` requests per sliding `window_s`: None when
        it is within the limit (and counted), else the seconds until the oldest request in the
        window leaves it (not counted). One write transaction, so the limit holds across API
        processes; the key keeps at most `rpm` rows."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "DELETE FROM hits WHERE key_id = ? AND ts <= ?", (key_id, now - window_s)
            )
            n, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(ts) FROM hits WHERE key_id = ?", (key_id,)
            ).fetchone()
            if n >= rpm:
                return max(0.0, oldest + window_s - now)
            self._db.execute("INSERT INTO hits VALUES (?, ?)", (key_id, now))
            return None

    def clear_reservations(self) -> None:
        """At server start: reservations left by a server that was killed mid-request."""
        with self._lock, self._db:
            self._db.execute("UPDATE keys SET reserved_tokens = 0, reserved_money = 0")
            self._db.execute("DELETE FROM held")

    def tokens_used(self, key_id: str) -> int:
        rows = self._q("SELECT used_tokens FROM keys WHERE id = ?", (key_id,))
        return int(rows[0]["used_tokens"]) if rows else 0

    def usage(self) -> list[dict]:
        """Per key: requests and prompt, cache-hit, completion, reasoning tokens."""
        rows = self._q(
            "SELECT k.id, k.name, k.revoked, COUNT(u.ts) AS requests, "
            "COALESCE(SUM(u.prompt_tokens), 0) AS prompt_tokens, "
            "COALESCE(SUM(u.cache_hit_tokens), 0) AS cache_hit_tokens, "
            "COALESCE(SUM(u.completion_tokens), 0) AS completion_tokens, "
            "COALESCE(SUM(u.reasoning_tokens), 0) AS reasoning_tokens "
            "FROM keys k LEFT JOIN usage u ON u.key_id = k.id GROUP BY k.id ORDER BY k.created"
        )
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ conversations
    def save_conversation(
        self, key_id: str, conv_id: str | None, title: str, messages: list[dict]
    ) -> str:
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
