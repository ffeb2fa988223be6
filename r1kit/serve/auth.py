"""Bearer keys, token quota (402) and a per-key request-rate limit (429).

Keys are looked up in the store (hashed); a revoked or unknown key is a 401. The rate limit is
a sliding window of 60 s over the key's requests, kept in the store (SQLite), so it holds over
every API worker process of a server (`r1kit serve --api-workers N`); the quota (tokens) and
credit (money) are checked against the key's running totals and the reservations of its
requests in flight (one row, never a scan of the usage rows; serve/admission.py reserves and
settles). With auth off every request is served as key `-`.
"""

from __future__ import annotations

import math

from fastapi import Request

from r1kit.serve.errors import APIError
from r1kit.serve.store import NO_KEY, Key, Store

WINDOW_S = 60.0


class Auth:
    def __init__(self, store: Store, enabled: bool = True, default_rpm: int | None = None):
        self.store = store
        self.enabled = enabled
        self.default_rpm = default_rpm

    def key_of(self, request: Request) -> str | None:
        h = request.headers.get("authorization", "")
        if h[:7].lower() == "bearer ":
            return h[7:].strip()
        return request.headers.get("x-api-key") or None

    def check(self, request: Request, quota: bool = True, rate: bool = True) -> str:
        """The key id this request is served under; raises 401, 402 (unless `quota` is
        False: a spent key may still read its balance) or 429 (unless `rate` is False). The
        key's record goes to `request.state.key` (None with auth off)."""
        request.state.key = None
        if not self.enabled:
            return NO_KEY
        key = self.identify(request)
        request.state.key = key
        if quota:
            left, money = key.tokens_left(), key.money_left()
            if left is not None and left <= 0:
                raise APIError(
                    402,
                    f"quota of {key.quota_tokens} tokens exhausted for this key",
                    code="insufficient_quota",
                )
            if money is not None and money <= 0:
                raise APIError(
                    402,
                    f"credit of {key.credit:g} {key.currency} exhausted for this key",
                    code="insufficient_quota",
                )
        rpm = key.rpm if key.rpm is not None else self.default_rpm
        if rate and rpm is not None:
            self._rate(key.id, rpm)
        return key.id

    def owner(self, request: Request) -> str:
        """The key id for the web chat's own routes (sign-in, conversation history): a known,
        unrevoked key is enough (401 otherwise); quota and rate apply to model requests only,
        so a key over its quota still reads, renames and deletes its conversations."""
        return self.identify(request).id if self.enabled else NO_KEY

    def identify(self, request: Request) -> Key:
        """The request's key record; raises 401 for a missing, unknown or revoked key."""
        raw = self.key_of(request)
        if not raw:
            raise APIError(
                401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"
            )
        key = self.store.find_key(raw)
        if key is None:
            raise APIError(401, "invalid API key", code="invalid_api_key")
        if key.revoked is not None:
            raise APIError(401, "this API key was revoked", code="invalid_api_key")
        return key

    def _rate(self, key_id: str, rpm: int) -> None:
        wait = self.store.hit(key_id, rpm, WINDOW_S)
        if wait is not None:
            raise APIError(
                429,
                f"rate limit of {rpm} requests per minute reached; retry in {wait:.1f} s",
                code="rate_limit_exceeded",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
