"""The processing chain: transform → built-in processors → partition → convert → compress → encrypt.

Each step is a plain function or a small class; ``chain.py`` puts them in order
for one delivery stream and runs the CPU-heavy ones off the event loop.
"""
