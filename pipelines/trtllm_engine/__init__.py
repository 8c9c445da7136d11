"""Build a TensorRT-LLM engine from a Hugging Face Llama checkpoint for `sluice repo render --engine trtllm`."""
