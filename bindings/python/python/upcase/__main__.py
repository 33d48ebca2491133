"""``python -m upcase server [options] [PORT [HOST]]`` and
``python -m upcase client [options] [HOST [PORT]]`` (see upcase.cli)."""

import sys

from upcase.cli import main

if __name__ == "__main__":
    sys.exit(main())
