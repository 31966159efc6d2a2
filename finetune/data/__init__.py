"""Trace formats, validation, rendering with loss masks, and the prepare / inspect verbs."""
