"""A policy file that can be re-read while the server runs (SIGHUP, or an embedder's call)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from topgun.auth.principal import Principal
from topgun.rbac._load import PolicyError, load_policy
from topgun.rbac._model import Action, Decision
from topgun.rbac._policy import FilePolicy

Listener = Callable[[FilePolicy], object]


class ReloadablePolicy:
    """The policy in ``path``, swapped whole on each successful :meth:`reload`.

    Construction loads the file and raises :class:`PolicyError` if it is bad (the server
    must not start). A bad file at reload is logged and rejected: the policy in force stays.
    ``version`` counts successful reloads (0 after construction); listeners run after each,
    so the engine can re-check live subscriptions against the new policy.
    """

    _log = Logger()

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        loader: Callable[[str], FilePolicy] = load_policy,
    ) -> None:
        self.path = os.fspath(path)
        self._loader = loader
        self._policy = loader(self.path)
        self.version = 0
        self._listeners: list[Listener] = []

    @property
    def policy(self) -> FilePolicy:
        """The policy in force."""
        return self._policy

    def authorize(
        self, principal: Principal, action: Action, map_name: str, value: Any = None
    ) -> Decision:
        return self._policy.authorize(principal, action, map_name, value)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(new_policy)`` after every successful reload; returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def reload(self) -> bool:
        """Re-read the file; True if the new policy is in force, False if it was rejected."""
        try:
            policy = self._loader(self.path)
        except PolicyError as error:
            self._log.error(
                "policy reload rejected, the previous policy stays in force: {error}",
                error=str(error),
                path=self.path,
                event_kind="rbac_reload_rejected",
            )
            return False
        self._policy = policy
        self.version += 1
        self._log.info(
            "policy reloaded from {path}: {rules} rules (version {version})",
            path=self.path,
            rules=len(policy.rules),
            version=self.version,
            event_kind="rbac_reloaded",
        )
        for warning in policy.warnings:
            self._log.warn("policy {path}: {note}", path=self.path, note=warning)
        for listener in list(self._listeners):
            try:
                listener(policy)
            except Exception:
                self._log.failure("policy reload listener {listener!r} failed", listener=listener)
        return True
