"""``python -m ghgwatch``: the same CLI as the ``ghgwatch`` command."""

from ghgwatch.cli import main

if __name__ == "__main__":
    main()
