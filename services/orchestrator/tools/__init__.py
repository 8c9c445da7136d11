"""Function calling: OpenAI `tools` / `tool_choice` parsing, the incremental `<tool_call>` parser, JSON Schema
validation of arguments, and server-side tools that the orchestrator runs itself (see `runner.py`)."""
