"""Config for ``state``: where routing state lives, per process (memory) or shared by replicas (Redis).

Kept apart from ``schema.py`` because it is one concept: what several gateway processes share.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class StateConfig(BaseModel):
    """``state``: breakers, cool-downs, rate-limit buckets, latency, score windows and spend totals."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backend: Literal["memory", "redis"] = Field(
        default="memory", description="memory: each process on its own; redis: shared by every replica")
    redis_url: SecretStr = Field(default=SecretStr("redis://127.0.0.1:6379/0"),
                                 description="redis:// or rediss:// URL (it may hold a password: never printed)")
    key_prefix: str = Field(default="llmroute:", min_length=1, max_length=64,
                            description="prefix of every key and channel: one per deployment sharing a Redis")
    sync_interval_s: float = Field(default=1.0, gt=0, le=60, description="how often each replica re-reads the "
                                   "shared snapshot and renews its presence (live changes arrive at once)")
    timeout_s: float = Field(default=0.5, gt=0, le=30, description="bound on one background Redis operation")
    reserve_timeout_s: float = Field(default=0.05, gt=0, le=5, description="bound on a budget reservation's "
                                     "round trip; past it the local rule decides")
    reconnect_s: float = Field(default=1.0, gt=0, le=60, description="wait between attempts to reach Redis "
                               "while it is down")
    max_pending_events: int = Field(default=10_000, gt=0, description="changes queued for Redis; past it the "
                                    "oldest are dropped (the next resync repairs what they carried)")
    min_replicas: int = Field(default=1, gt=0, description="replicas assumed at least when Redis is lost: each "
                              "may then reserve its share of what was left of a budget, and no more")
    lease_share: float = Field(default=0.5, ge=0, le=1, description="share of a budget's room left that one "
                               "replica takes at a time, divided by the live replicas (at least the request): "
                               "reservations within it need no round trip. 0: every reservation asks Redis")
    lease_idle_s: float = Field(default=5.0, gt=0, le=3600, description="a replica gives its unused slice of a "
                                "budget back after this long without a reservation against it")
    samples_per_flush: int = Field(default=16, gt=0, description="latency samples and scores per provider "
                                   "sent in one batch; the rest of the batch is counted, not sent")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value
