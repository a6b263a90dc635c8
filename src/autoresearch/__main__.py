import sys

from autoresearch.apps.cli import main

sys.exit(main())
