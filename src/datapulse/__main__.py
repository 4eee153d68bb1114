"""``python -m datapulse`` is the ``datapulse`` command."""

from datapulse.cli import main

main()
