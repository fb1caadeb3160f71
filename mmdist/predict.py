"""Entry point: ``python -m mmdist.predict CHECKPOINT IMAGE... [--out DIR]`` (see mmdist.evaluation.predict)."""

import sys

from mmdist.evaluation.predict import main

if __name__ == "__main__":
    sys.exit(main())
