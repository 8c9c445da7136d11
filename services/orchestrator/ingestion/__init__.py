"""Documents into collections through the authenticated API: native gRPC (sluice.v1.Collections) and OpenAI-style
HTTP (/v1/files + /v1/vector_stores). Both forward to the internal retrieval service as the API key's tenant."""
