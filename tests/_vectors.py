"""Access to the golden vectors produced by the upstream TypeScript code.

The vectors live outside the repository, in ``../shared/vectors`` next to the checkout (or
wherever ``TOPGUN_VECTORS`` points). Where they are absent, tests that need them skip with a
reason; with ``TOPGUN_REQUIRE_VECTORS=1`` (set by ``.ci/run``) a missing folder is a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest

_REPO = Path(__file__).resolve().parent.parent


def vectors_dir() -> Path:
    """Return the vectors folder, or skip (or fail under TOPGUN_REQUIRE_VECTORS) if absent."""
    configured = os.environ.get("TOPGUN_VECTORS")
    path = Path(configured) if configured else _REPO.parent / "shared" / "vectors"
    if path.is_dir():
        return path
    reason = (
        f"golden vectors not found at {path}: place the shared/ folder beside the checkout "
        "or set TOPGUN_VECTORS"
    )
    if os.environ.get("TOPGUN_REQUIRE_VECTORS") == "1":
        raise AssertionError(reason + " (TOPGUN_REQUIRE_VECTORS=1)")
    raise SkipTest(reason)


def load_json(relative: str) -> Any:
    """Load one JSON file of the vectors, e.g. ``crdt/hash.json``."""
    with (vectors_dir() / relative).open(encoding="utf-8") as f:
        return json.load(f)


def read_bytes(relative: str) -> bytes:
    """Read one binary file of the vectors, e.g. ``messages/AUTH.msgpack``."""
    return (vectors_dir() / relative).read_bytes()
