"""``python -m elizamesh``: the command line."""

from elizamesh.cli import app

app()
