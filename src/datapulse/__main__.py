"""``python -m datapulse`` is the ``datapulse`` command."""

from datapulse.cli import main

if __name__ == "__main__":  # not when a ``spawn``ed worker process imports the parent's main module
    main()
