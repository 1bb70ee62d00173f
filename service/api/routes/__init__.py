"""One router per topic, gathered under /v1 by ``service.api.app`` (health lives at the root)."""
