"""The SQL of Kinesis Data Analytics applications: the dialect (``dialect.py``, read into a program of
streams and pumps) and the engine that runs a program over micro-batches of Arrow rows (``engine.py``)."""

from firehose.analytics.sql.dialect import CodeError, Program, Pump, compile_program
from firehose.analytics.sql.engine import Engine

__all__ = ["CodeError", "Engine", "Program", "Pump", "compile_program"]
