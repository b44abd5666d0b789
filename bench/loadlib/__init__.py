"""The pieces of the load harness ``bench/load.py``.

A lean asyncio WebSocket client (one process drives thousands of connections), an HDR-style
latency histogram, the frames the stock TopGun client sends, server processes pinned to a
core, ``/proc`` sampling, and the scenarios themselves.
"""
