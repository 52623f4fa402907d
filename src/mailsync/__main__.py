"""``python -m mailsync``: the same as the ``mailsync`` command."""

import sys

from mailsync._cli import main

sys.exit(main())
