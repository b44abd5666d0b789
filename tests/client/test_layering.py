"""The client's layering: a sans-I/O core, and no Twisted anywhere in the client."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import topgun.client

PACKAGE = Path(topgun.client.__file__).parent
#: Only the asyncio driver may do I/O.
DRIVER = "_client.py"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


class LayeringTests(SynchronousTestCase):
    def test_core_modules_import_no_io_library(self) -> None:
        """Every module but the driver imports neither asyncio nor websockets nor Twisted."""
        for path in sorted(PACKAGE.glob("*.py")):
            if path.name in (DRIVER, "__init__.py"):
                continue
            bad = {
                name
                for name in imported_modules(path)
                if name.split(".")[0] in ("asyncio", "websockets", "twisted", "autobahn")
            }
            self.assertEqual(bad, set(), path.name)

    def test_importing_the_client_loads_no_twisted(self) -> None:
        """``import topgun.client`` pulls in neither Twisted nor Autobahn."""
        code = (
            "import sys, topgun.client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('twisted', 'autobahn', 'txaio')))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(out.strip(), "[]")
