"""Entry point: ``python -m mmdist.predict RUN_DIR|CHECKPOINT|EXPORTED_FILE IMAGE_OR_FOLDER...
[--out DIR] [--saliency-scale per-image|shared]`` (see mmdist.evaluation.predict)."""

import sys

from mmdist.evaluation.predict import main

if __name__ == "__main__":
    sys.exit(main())
