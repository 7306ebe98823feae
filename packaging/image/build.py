#!/usr/bin/env python3
"""Build moorage's container image into dist/image (an OCI layout); prints its digest.

Usage: python packaging/image/build.py [--output DIR] [--keep-rootfs] ...  (as root)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from moorage_image.cli import main

if __name__ == "__main__":
    sys.exit(main())
