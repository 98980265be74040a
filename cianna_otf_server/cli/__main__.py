"""``python -m cianna_otf_server.cli``: the ``cianna-otf`` command."""

import sys

from . import main

sys.exit(main())
