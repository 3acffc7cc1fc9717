"""`python -m modelworks_client`: the CLI."""

import sys

from modelworks_client.cli import main

sys.exit(main())
