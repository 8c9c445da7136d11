"""Retrieval: chunking, the embedder client, the Milvus store, hybrid search and the gRPC service."""
