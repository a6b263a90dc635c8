"""autoresearch: AI agents doing empirical research on their own, with a harness that keeps them honest."""
__version__ = "0.1.0"
