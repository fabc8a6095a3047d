"""python -m monitor: the insmon command, for subprocesses started by insmon itself."""

import sys

from monitor.cli import main

sys.exit(main())
