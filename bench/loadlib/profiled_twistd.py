"""``twistd`` under cProfile, writing the profile when the reactor has shut down.

Usage: ``python profiled_twistd.py OUT.cprofile TWISTD-ARGS...``. ``python -m cProfile``
cannot profile twistd: on SIGTERM twistd stops its reactor and then kills itself with the
same signal, before cProfile's exit handler runs. The dump here runs as an "after
shutdown" trigger of the reactor, before that.
"""

from __future__ import annotations

import cProfile
import sys


def main() -> None:
    out, *args = sys.argv[1:]
    from twisted.internet import reactor
    from twisted.scripts.twistd import run

    profile = cProfile.Profile()

    def dump() -> None:
        profile.disable()
        profile.dump_stats(out)

    reactor.addSystemEventTrigger("after", "shutdown", dump)
    sys.argv = ["twistd", *args]
    profile.enable()
    run()


if __name__ == "__main__":
    main()
