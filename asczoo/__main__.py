import sys

from asczoo.cli import main

sys.exit(main())
