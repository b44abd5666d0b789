"""topgun: a TopGun-compatible local-first sync server and client on Twisted and Autobahn."""

__version__ = "0.1.0.dev0"
