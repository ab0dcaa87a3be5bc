import sys

from .base import main

sys.exit(main())
