"""``python -m wkctl``: the same entry point as the ``wkctl`` console script."""

from wkctl.cli.main import main

if __name__ == "__main__":
    main()
