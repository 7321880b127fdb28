"""Retries through gRPC's own retry policy: the channel's service config, not a loop of ours.

gRPC retries a call transparently, with jittered exponential backoff, when it fails with one of
`retryable_codes`; the server sends UNAVAILABLE exactly when trying elsewhere or later is right
(draining, still loading; a refused connection is UNAVAILABLE too). Only the idempotent calls
are retried: Classify and ModelInfer compute the same answer twice, a stream is never replayed.
A target of the `dns:` scheme also gets `round_robin`, so every address the name resolves to
takes calls and a retry may land on another replica.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from digitserve.wire.names import DIGITS_SERVICE, V2_SERVICE

IDEMPOTENT_METHODS = ((DIGITS_SERVICE, "Classify"), (V2_SERVICE, "ModelInfer"))


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retryPolicy fields. Attempts include the first; gRPC caps them at 5."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 1.0
    backoff_multiplier: float = 2.0
    retryable_codes: tuple[str, ...] = ("UNAVAILABLE",)

    def to_json(self) -> dict[str, Any]:
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff_s}s",
            "maxBackoff": f"{self.max_backoff_s}s",
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": list(self.retryable_codes),
        }


def channel_options(target: str, retries: RetryPolicy | None, wait_for_ready: bool) -> list[tuple[str, Any]]:
    """The channel arguments that carry the policy (an empty service config when nothing is asked)."""
    methods: list[dict[str, Any]] = []
    if retries is not None:
        methods.append({
            "name": [{"service": service, "method": method} for service, method in IDEMPOTENT_METHODS],
            "retryPolicy": retries.to_json(),
            **({"waitForReady": True} if wait_for_ready else {}),
        })
    if wait_for_ready:  # every other call waits for a connection too
        methods.append({"name": [{"service": DIGITS_SERVICE}, {"service": V2_SERVICE}], "waitForReady": True})
    config: dict[str, Any] = {"methodConfig": methods}
    if target.startswith("dns:"):
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return [
        ("grpc.enable_retries", 1 if retries is not None else 0),
        ("grpc.service_config", json.dumps(config)),
        # reconnect soon after a restart (gRPC's default waits about 1 s, then longer)
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
