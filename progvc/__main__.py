import sys

from progvc.cli import main

sys.exit(main())
