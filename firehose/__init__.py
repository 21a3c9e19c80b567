"""firehose: a self-hosted delivery daemon that speaks the Amazon Data Firehose API."""

__version__ = "0.1.0"
