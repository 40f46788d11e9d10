"""``python -m metaauto.cli``: the same as the ``metaauto`` console script."""

from metaauto.cli import app

app(prog_name="metaauto")
