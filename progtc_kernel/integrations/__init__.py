"""Bridges to agent frameworks and protocols; each needs its optional extra."""
