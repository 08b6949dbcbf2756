"""Tables: Delta storage, the payload spool and writer, inference-log formatting."""
