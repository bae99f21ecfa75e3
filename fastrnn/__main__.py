"""`python -m fastrnn`: the `fastrnn` command, whose code is fastrnn.apps.cli."""
from .apps.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
