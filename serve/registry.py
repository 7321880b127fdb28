"""The versions in service and the route from a call's (model, version) to one of them.

Each served version has its own ONNX Runtime sessions and its own batcher, so a batch never
mixes versions. Routing is a dict lookup on the event loop; a version leaves it in one step
(`withdraw`), after which no new call can pin it, and `unload` waits for the calls that pinned
it before closing its batcher and dropping the last reference to its sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from digitserve.errors import InvalidInput
from digitserve.serve.batcher import Batcher
from digitserve.serve.errors import ModelNotFound


@dataclass(eq=False)
class ServedVersion:
    """One version in service: its model, its batcher, the calls that pinned it."""

    model: Any
    """An OnnxModel (anything with `info` and `run`)."""
    batcher: Batcher
    calls_in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def name(self) -> str:
        return str(self.model.info.name)

    @property
    def version(self) -> int:
        return int(self.model.info.version)

    def pin(self) -> None:
        self.calls_in_flight += 1
        self.idle.clear()

    def unpin(self) -> None:
        self.calls_in_flight -= 1
        if not self.calls_in_flight:
            self.idle.set()


def plural(word: str, items: list[Any]) -> str:
    """`version 3` or `versions 2, 3`."""
    return f"{word}{'s' if len(items) != 1 else ''} {', '.join(map(str, items))}"


class Registry:
    """The served versions by model name and version (see module doc)."""

    def __init__(self, make_batcher: Callable[[], Batcher], default_name: str | None = None):
        self._make_batcher = make_batcher
        self.default_name = default_name
        """--name: the model a request naming none goes to (else the only model served)."""
        self._served: dict[str, dict[int, ServedVersion]] = {}

    def __iter__(self) -> Iterator[ServedVersion]:
        for versions in list(self._served.values()):
            yield from list(versions.values())

    def __len__(self) -> int:
        return sum(len(versions) for versions in self._served.values())

    def names(self) -> list[str]:
        return sorted(self._served)

    def versions(self, name: str) -> list[int]:
        return sorted(self._served.get(name, {}))

    def get(self, name: str, version: int) -> ServedVersion | None:
        return self._served.get(name, {}).get(version)

    def newest(self, name: str) -> ServedVersion | None:
        versions = self._served.get(name)
        return versions[max(versions)] if versions else None

    @property
    def queued_images(self) -> int:
        return sum(served.batcher.queued_images for served in self)

    def describe(self) -> str:
        """`cnn (versions 1, 2), softmax (version 3)`, or `no model` when none is served."""
        return ", ".join(f"{name} ({plural('version', self.versions(name))})" for name in self.names()) or "no model"

    def resolve(self, name: str, version: int | None) -> ServedVersion:
        """The version a call asks for: `name` ("" = the default model), `version` (None = newest)."""
        if not name:
            name = self._default()
        versions = self._served.get(name)
        if not versions:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {self.describe()}")
        if version is None:
            return versions[max(versions)]
        served = versions.get(version)
        if served is None:
            raise ModelNotFound(
                f"version {version} of model {name!r} is not served; it serves {plural('version', sorted(versions))} "
                "of it (leave the version empty for the newest)"
            )
        return served

    def _default(self) -> str:
        if self.default_name is not None:
            return self.default_name
        if len(self._served) == 1:
            return next(iter(self._served))
        if not self._served:
            raise ModelNotFound("this server serves no model now (they were unloaded)")
        raise InvalidInput(
            f"this server serves several models ({', '.join(self.names())}): name the one to use "
            "(digits.v1: ClassifyRequest.model; KServe V2: model_name)"
        )

    def add(self, model: Any) -> ServedVersion:
        """Put a loaded, warmed model in service beside the others (newest if its version is)."""
        batcher = self._make_batcher()
        batcher.start()
        served = ServedVersion(model, batcher)
        self._served.setdefault(served.name, {})[served.version] = served
        return served

    def withdraw(self, name: str, version: int) -> ServedVersion | None:
        """Take a version out of routing at once: calls that pinned it finish, no new one can."""
        versions = self._served.get(name, {})
        served = versions.pop(version, None)
        if not versions:
            self._served.pop(name, None)
        return served

    @staticmethod
    async def unload(served: ServedVersion) -> None:
        """After `withdraw`: wait for its calls in flight, then close its batcher."""
        await served.idle.wait()
        await served.batcher.close()

    async def close(self) -> None:
        """Close every batcher (shutdown): anything still queued fails with Draining."""
        for served in self:
            self.withdraw(served.name, served.version)
            await served.batcher.close()
