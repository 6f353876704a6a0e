"""``python -m aisystant_sdk``: the same as the ``aisystant`` command."""

from .cli import main

if __name__ == "__main__":
    main()
