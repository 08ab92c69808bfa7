import sys

from flowvoice.cli import main

sys.exit(main())
