"""Entry point: ``python -m mmdist.predict RUN_DIR|CHECKPOINT|EXPORTED_FILE IMAGE... [--out DIR]``
(see mmdist.evaluation.predict)."""

import sys

from mmdist.evaluation.predict import main

if __name__ == "__main__":
    sys.exit(main())
