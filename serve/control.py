"""Which versions of which models are served, and how they come and go.

The start plan, every reload (poll or SIGHUP) and every explicit load/unload come down to one
step per model, `_settle`: its candidates are the complete versions on disk that did not fail
to load, plus the versions in memory (a served version whose files disappear or change keeps
serving the copy verified at load, and the log says so); its policy (serving.json, an explicit
pin, else --version-policy) picks the wanted ones among them. Wanted versions not in memory are
loaded, verified and warmed beside the others, each entering the routing once warm (the newest
version then takes the calls that name none); versions no longer wanted leave the routing, finish
the calls that pinned them, and are unloaded. A version that fails to load is remembered and not
retried until SIGHUP or an explicit load, so latest:1 falls back to the version it served. A
model folder that disappears is drained and unloaded.

Under `--model-control explicit` the repository is read only at start and by explicit calls
(Triton's RepositoryModelLoad/Unload). `index` reports every version on disk or in memory with
its state (READY, LOADING, UNLOADING, UNAVAILABLE and why), as Triton's RepositoryIndex does.
Nothing here is written elsewhere: Triton and TF Serving do the same in C++ inside their servers,
and no Python library manages ONNX Runtime sessions by version policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitserve.errors import DigitserveError, ModelRepositoryError
from digitserve.repository import ModelRepository
from digitserve.serve.errors import LoadFailed, ModelNotFound, TooManyVersions
from digitserve.serve.model import read_verified_onnx
from digitserve.serve.policy import SERVING_FILE, VersionPolicy, read_model_policy
from digitserve.serve.registry import Registry, ServedVersion, plural
from digitserve.serve.settings import ServeSettings

if TYPE_CHECKING:  # its import picks prometheus-client's process mode: the supervisor must not (workers.py)
    from digitserve.serve.metrics import Metrics

log = logging.getLogger(__name__)

READY, LOADING, UNLOADING, UNAVAILABLE = "READY", "LOADING", "UNLOADING", "UNAVAILABLE"
Key = tuple[str, int]


@dataclass(frozen=True)
class ModelOnDisk:
    """One model folder as a scan found it."""

    name: str
    complete: tuple[int, ...]
    policy: VersionPolicy | None
    """None when its serving.json is bad (`problem` says why)."""
    problem: str = ""


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: int
    state: str
    reason: str = ""


def scan(root: Path, default: VersionPolicy, names: Collection[str] | None = None) -> dict[str, ModelOnDisk]:
    """The model folders under `root` (only `names` when given) with their complete versions."""
    found: dict[str, ModelOnDisk] = {}
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return found
    for folder in folders:
        if names is not None and folder.name not in names:
            continue
        complete = tuple(ModelRepository(root, folder.name).complete_versions())
        try:
            found[folder.name] = ModelOnDisk(folder.name, complete, read_model_policy(folder, default))
        except ModelRepositoryError as exc:
            found[folder.name] = ModelOnDisk(folder.name, complete, None, str(exc))
    return found


def _artifact_stamp(model: Any) -> tuple[int, int] | None:
    """Size and mtime of the file a model was loaded from (None once it is gone)."""
    try:
        stat = os.stat(model.info.path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def selected_models(settings: ServeSettings) -> list[str] | None:
    """The models --name/--model restrict serving to (None: every model in the repository)."""
    if settings.name is not None:
        return [settings.name]
    return list(settings.model) or None


def describe_plan(plan: dict[str, list[int]]) -> str:
    """`cnn version 2, softmax versions 1, 3`."""
    return ", ".join(f"{name} {plural('version', versions)}" for name, versions in sorted(plan.items()))


def start_plan(settings: ServeSettings) -> dict[str, list[int]]:
    """What the server serves at start (model -> versions), after checking that it can: the
    models exist, their policies admit a version, the bound holds, each file matches its sha256."""
    root = settings.repo
    every = scan(root, VersionPolicy.parse(settings.version_policy))
    servable = {name: found for name, found in every.items() if found.complete}
    names = selected_models(settings)
    if names is not None:
        unknown = [name for name in names if name not in every]
        if unknown:
            raise ModelRepositoryError(
                f"no model {', '.join(map(repr, unknown))} in {root} (it holds "
                f"{', '.join(sorted(every)) or 'no model folder'}): check --model/--name, and the variables "
                "DIGITSERVE_MODEL/DIGITSERVE_NAME (DIGITSERVE_MODEL is also train's --model)"
            )
        for name in names:
            if name not in servable:
                ModelRepository(root, name).latest_complete_version()  # raises, saying what to run
    chosen = {name: servable[name] for name in (names or servable)}
    if not chosen:
        raise ModelRepositoryError(
            f"no exported model version in {root} (no {root}/<model>/<version>/ has a manifest.json): "
            "run `digitserve train` and `digitserve export` first"
        )
    plan: dict[str, list[int]] = {}
    for name, found in chosen.items():
        if found.policy is None:
            raise ModelRepositoryError(found.problem)
        versions = found.policy.select(found.complete)
        if not versions:
            raise ModelRepositoryError(
                f"model {name!r}: version policy {found.policy} admits none of its complete versions "
                f"({', '.join(map(str, found.complete))}): fix {root / name / SERVING_FILE} or --version-policy"
            )
        plan[name] = versions
    total = sum(map(len, plan.values()))
    bound = settings.max_loaded_versions
    if bound and total > bound:
        raise ModelRepositoryError(
            f"the version policies admit {total} versions ({describe_plan(plan)}), more than "
            f"--max-loaded-versions {bound}: raise the bound, or narrow --version-policy / serving.json"
        )
    for name, versions in plan.items():
        for version in versions:
            read_verified_onnx(ModelRepository(root, name), version, settings.artifact)
    return plan


class ModelControl:
    """Plans, loads, reloads and unloads the served versions (see module doc)."""

    def __init__(
        self,
        settings: ServeSettings,
        registry: Registry,
        metrics: Metrics,
        load: Callable[[str, int], Any],
        changed: Callable[[str], Awaitable[None]],
    ):
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.explicit = settings.model_control == "explicit"
        self.default_policy = VersionPolicy.parse(settings.version_policy)
        self._load = load
        """(name, version) -> a loaded, verified, warmed OnnxModel (blocking: run in a thread)."""
        self._changed = changed
        """Called after a model's served versions changed (health follows)."""
        self._lock = asyncio.Lock()
        self._failed: dict[Key, str] = {}
        self._pins: dict[str, VersionPolicy] = {}
        self._loading: set[Key] = set()
        self._unloading: dict[Key, asyncio.Task[None]] = {}
        self._stamps: dict[Key, tuple[int, int] | None] = {}
        self._noted: dict[str, str] = {}
        """The last thing logged about a model's repository state, so a poll does not repeat it."""

    def selected(self) -> list[str] | None:
        return selected_models(self.settings)

    def _scan(self, names: Collection[str] | None = None) -> dict[str, ModelOnDisk]:
        return scan(self.settings.repo, self.default_policy, self.selected() if names is None else names)

    # -- start ----------------------------------------------------------------------------------
    async def open_plan(self, plan: dict[str, list[int]]) -> list[Any]:
        """Load, verify and warm every version of the plan (not yet in service)."""
        return [
            await asyncio.to_thread(self._load, name, v) for name, versions in sorted(plan.items()) for v in versions
        ]

    async def serve_opened(self, models: list[Any]) -> None:
        for model in models:
            await self._serve(model)

    async def _serve(self, model: Any) -> ServedVersion:
        served = self.registry.add(model)
        self._stamps[(served.name, served.version)] = _artifact_stamp(model)
        self.metrics.model_loaded(model, self.registry.versions(served.name))
        await self._changed(served.name)
        return served

    # -- reload ----------------------------------------------------------------------------------
    async def reload(self, force: bool = False) -> None:
        """Bring every selected model in line with the repository (poll and SIGHUP)."""
        if self.explicit:
            log.info("reload: explicit model control; only RepositoryModelLoad/Unload change what is served")
            return
        async with self._lock:
            if force:
                self._failed.clear()
            found = await asyncio.to_thread(self._scan)
            for name in sorted(set(found) | set(self.registry.names())):
                try:
                    await self._settle(name, found.get(name))
                except DigitserveError as exc:  # the model stays as it was; the next poll tries again
                    self._note(name, f"reload: {exc}; model {name!r} keeps {self._served_text(name)}", logging.ERROR)

    def _served_text(self, name: str) -> str:
        versions = self.registry.versions(name)
        return plural("version", versions) if versions else "no version"

    def _note(self, name: str, message: str, level: int = logging.INFO) -> None:
        """Log `message` unless it is what was last logged about `name` (polls repeat themselves)."""
        if self._noted.get(name) != message:
            self._noted[name] = message
            log.log(level, "%s", message)

    async def _settle(
        self, name: str, found: ModelOnDisk | None, explicit: bool = False, policy: VersionPolicy | None = None
    ) -> None:
        """Load what the policy wants of `name`, unload what it no longer wants (see module doc).

        `explicit`: an operator's call waits for it; errors raise instead of being logged.
        `policy`: instead of the model's own (an explicit load's pin). A policy that admits no
        version leaves the model as it is: unloading everything takes an explicit unload.
        """
        served = set(self.registry.versions(name))
        if found is None:
            if served:
                log.info(
                    "reload: the folder of model %r is gone; draining and unloading %s", name, self._served_text(name)
                )
                await self._retire(name, served, wait=explicit)
            return
        self._note_kept_in_memory(name, found, served)
        policy = policy or self._pins.get(name, found.policy)
        if policy is None:
            raise LoadFailed(found.problem)
        if missing := policy.missing(found.complete):
            self._note(f"{name} missing", f"version policy {policy} of {name!r}: {plural('version', missing)} "
                       "not complete in the repository, so not served", logging.WARNING)
        while True:
            served = set(self.registry.versions(name))
            candidates = {v for v in found.complete if (name, v) not in self._failed} | served
            wanted = set(policy.select(candidates))
            if not wanted and (served or explicit):
                complete = ", ".join(map(str, found.complete)) or "none"
                if explicit and policy.kind == "specific":
                    raise ModelNotFound(
                        f"model {name!r} has no complete {plural('version', list(policy.versions))} "
                        f"(complete: {complete})"
                    )
                raise LoadFailed(
                    f"version policy {policy} admits none of the loadable versions of {name!r} (complete: {complete})"
                )
            missing = sorted(wanted - served, reverse=True)
            if not missing:
                break
            self._check_bound(name, served, wanted)
            version = missing[0]
            await self._load_beside(name, version, policy, raise_failure=explicit)
        await self._retire(name, served - wanted, wait=explicit)

    def _note_kept_in_memory(self, name: str, found: ModelOnDisk, served: set[int]) -> None:
        for version in sorted(served):
            key = (name, version)
            if version not in found.complete:
                why = "its folder or manifest.json is gone"
            elif _artifact_stamp(self.registry.get(name, version).model) != self._stamps.get(key):  # type: ignore[union-attr]
                why = "its ONNX file changed on disk since it was verified"
            else:
                continue
            self._note(
                f"{name}/{version}",
                f"reload: version {version} of {name!r}: {why}; still serving the copy verified at load from memory",
                logging.WARNING,
            )

    def _check_bound(self, name: str, served: set[int], wanted: set[int]) -> None:
        bound = self.settings.max_loaded_versions
        after = len(self.registry) - len(served) + len(wanted)
        if bound and after > bound:
            raise TooManyVersions(
                f"serving {plural('version', sorted(wanted))} of {name!r} would make {after} versions loaded, "
                f"more than --max-loaded-versions {bound}; unload a model or narrow its version policy"
            )

    async def _load_beside(self, name: str, version: int, policy: VersionPolicy, raise_failure: bool) -> None:
        key = (name, version)
        log.info("loading version %d of %r beside %s (policy %s)", version, name, self._served_text(name), policy)
        self._loading.add(key)
        try:
            model = await asyncio.to_thread(self._load, name, version)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, DigitserveError) else f"{type(exc).__name__}: {exc}"
            self._failed[key] = reason
            self.metrics.reloads.labels("failure").inc()
            log.error(
                "version %d of %r not served: %s; %r keeps %s",
                version,
                name,
                reason,
                name,
                self._served_text(name),
                exc_info=not isinstance(exc, DigitserveError),
            )
            if raise_failure:
                raise LoadFailed(f"version {version} of {name!r} failed to load: {reason}") from None
            return
        finally:
            self._loading.discard(key)
        await self._serve(model)
        self._failed.pop(key, None)
        self.metrics.reloads.labels("success").inc()
        log.info(
            "reload: now serving version %d of %r on %s (%s served; calls already queued finish on "
            "the version they pinned)",
            version,
            name,
            model.info.provider,
            self._served_text(name),
        )

    async def _retire(self, name: str, versions: Collection[int], wait: bool) -> None:
        """Withdraw `versions` of `name` from routing now; unload each once its calls are done."""
        tasks = []
        for version in sorted(versions):
            served = self.registry.withdraw(name, version)
            if served is None:
                continue
            self._stamps.pop((name, version), None)
            log.info(
                "version %d of %r leaves service: finishing its %d calls in flight, then unloading",
                version,
                name,
                served.calls_in_flight,
            )
            task = asyncio.create_task(self._unload(served), name=f"unload-{name}-{version}")
            self._unloading[(name, version)] = task
            tasks.append(task)
        if tasks:
            self.metrics.versions_changed(name, self.registry.versions(name))
            await self._changed(name)
        if wait:
            await asyncio.gather(*tasks)

    async def _unload(self, served: ServedVersion) -> None:
        key = (served.name, served.version)
        try:
            await self.registry.unload(served)
            log.info("version %d of %r unloaded", served.version, served.name)
        finally:
            self._unloading.pop(key, None)

    # -- explicit model control ---------------------------------------------------------------
    async def load(self, name: str, version: int | None = None) -> None:
        """RepositoryModelLoad: serve `name` per its policy, or exactly `version` (a pin)."""
        async with self._lock:
            found = (await asyncio.to_thread(self._scan, [name])).get(name)
            if found is None:
                every = await asyncio.to_thread(scan, self.settings.repo, self.default_policy)
                raise ModelNotFound(
                    f"no model {name!r} in the repository (it holds {', '.join(sorted(every)) or 'no model'})"
                )
            pin = None if version is None else VersionPolicy("specific", versions=(version,))
            for key in [key for key in self._failed if key[0] == name]:
                del self._failed[key]  # an explicit load retries what failed before
            await self._settle(name, found, explicit=True, policy=pin or found.policy)
            if pin is None:  # only once it worked: a refused load leaves the model as it was
                self._pins.pop(name, None)
            else:
                self._pins[name] = pin

    async def unload(self, name: str) -> None:
        """RepositoryModelUnload: drain and unload every version of `name`."""
        async with self._lock:
            if not self.registry.versions(name) and name not in await asyncio.to_thread(self._scan, [name]):
                raise ModelNotFound(f"no model {name!r} is served or in the repository")
            self._pins.pop(name, None)
            await self._retire(name, self.registry.versions(name), wait=True)

    # -- index ----------------------------------------------------------------------------------------
    async def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every version on disk or in memory with its state (Triton's RepositoryIndex)."""
        found = await asyncio.to_thread(scan, self.settings.repo, self.default_policy)
        selected = self.selected()
        keys = {(name, v) for name, model in found.items() for v in model.complete}
        keys |= {(s.name, s.version) for s in self.registry} | self._loading | set(self._unloading)
        entries = [self._entry(name, v, found.get(name), selected) for name, v in sorted(keys)]
        return [entry for entry in entries if entry.state == READY or not ready_only]

    def _entry(self, name: str, version: int, found: ModelOnDisk | None, selected: list[str] | None) -> IndexEntry:
        key = (name, version)
        if key in self._loading:
            return IndexEntry(name, version, LOADING)
        if self.registry.get(name, version) is not None:
            return IndexEntry(name, version, READY)
        if key in self._unloading:
            return IndexEntry(name, version, UNLOADING, "finishing its calls in flight, then unloading")
        if key in self._failed:
            reason = f"failed to load: {self._failed[key]}"
        elif found is None:
            reason = "unloaded: its model folder is gone"
        elif self.explicit and not self.registry.versions(name):
            reason = "not loaded (explicit model control: RepositoryModelLoad loads it)"
        elif not self.explicit and selected is not None and name not in selected:
            reason = "not served: the server was started with --model/--name naming other models"
        elif found.policy is None:
            reason = found.problem
        else:
            reason = f"not admitted by the version policy {self._pins.get(name, found.policy)}"
        return IndexEntry(name, version, UNAVAILABLE, reason)
