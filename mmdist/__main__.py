"""``python -m mmdist COMMAND ...``: the same as the ``mmdist`` command (see mmdist.cli)."""

import sys

from mmdist.cli import main

if __name__ == "__main__":
    sys.exit(main())
