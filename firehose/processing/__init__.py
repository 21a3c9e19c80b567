"""The record chain: transform → built-in processors → partition.

Each step is a plain function or a small class; ``chain.py`` puts them in order
for one delivery stream and runs the CPU-heavy ones off the event loop. What
becomes of the chain's output when a batch is delivered (conversion,
compression, encryption) is the encoding stage, ``firehose.encoding``.
"""
