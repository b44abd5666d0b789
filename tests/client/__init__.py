"""Tests of the local-first client: the sans-I/O engine, storage, and the asyncio client."""
