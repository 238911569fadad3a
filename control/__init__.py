"""Control plane: configuration, the aiohttp app, signalling, tokens and the CLI."""
