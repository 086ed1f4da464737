"""transferkit.audio."""
