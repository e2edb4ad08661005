"""`asr serve`: the HTTP server (app.py), its dynamic batching (batch.py), its WebSocket stream (stream.py),
OpenAI's transcription API (openai_api.py) and the page it serves at / (page.html)."""
from .app import ServeOptions, Server, serve

__all__ = ["ServeOptions", "Server", "serve"]
