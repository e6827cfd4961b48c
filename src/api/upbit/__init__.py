"""Upbit's side of the exchange port: transport and auth, the JSON wire format, and the order rules.

``src.api.upbit_client.UpbitClient`` calls the endpoints through these; ``src.api.paper_exchange`` uses the
same order rules and wire format, so paper and live accept, round and refuse orders alike.
"""
