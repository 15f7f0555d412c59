"""``python -m tf_serving.server``: see `tf_serving.server.cli`."""

import sys

from tf_serving.server.cli import main

sys.exit(main())
