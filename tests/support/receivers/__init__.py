"""Receivers for destination protocols whose real servers cannot run here; each cites its protocol."""
