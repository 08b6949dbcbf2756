"""The review app: its page and its small API."""
