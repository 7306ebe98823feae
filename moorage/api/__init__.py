"""HTTP API: thin aiohttp handlers that parse requests, call the registry and render results."""
