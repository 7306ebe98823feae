"""The image tests import the builder (packaging/image/moorage_image) the way build.py does.

The builder is not part of the moorage package: it runs on the build machine, never in the
registry, so it lives beside the project and is put on the path here.
"""

from __future__ import annotations

import sys
from pathlib import Path

IMAGE_TOOLS = Path(__file__).resolve().parents[2] / "packaging" / "image"
if str(IMAGE_TOOLS) not in sys.path:
    sys.path.insert(0, str(IMAGE_TOOLS))
