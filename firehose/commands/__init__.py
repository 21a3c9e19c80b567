"""Commands for people (``firehose put``, ``ls``, ``describe``): clients of the public Firehose API.

They talk to a delivery stream's endpoint with boto3 exactly as any application does, so every
one of them works against this daemon and against AWS alike; none imports the daemon's
internals (an import contract in ``pyproject.toml`` keeps it so). What only this daemon knows
(backlog, last delivery, last error) comes from its ``/readyz`` endpoint and is shown when the
endpoint answers it.
"""
