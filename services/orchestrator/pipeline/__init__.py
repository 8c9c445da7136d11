"""The declared chat pipeline: stage config (config.py), stage runtime (stages.py), the guard and retrieve stages,
and ChatPipeline (pipeline.py), which the facade and the native Chat API call."""
