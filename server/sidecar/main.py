"""Launcher: `/usr/bin/python3 server/sidecar/main.py --model DIR ...` from any directory
(puts this folder on sys.path, then runs duet_sidecar's __main__)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from duet_sidecar.__main__ import main  # noqa: E402

sys.exit(main())
