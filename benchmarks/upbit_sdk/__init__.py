"""Our Upbit REST client against the official SDK (latency, 429/418, retries of orders); see benchmarks/README.md."""
