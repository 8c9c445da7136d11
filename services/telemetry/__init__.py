"""Sluice's local OTLP receiver: keeps recent spans in a SQLite file, repairs Triton traces that lost their parent,
answers trace queries (`sluice trace`) and can forward everything to another collector."""
