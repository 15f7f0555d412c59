"""``python -m tf_serving.server``: see `tf_serving.server.cli`."""

import sys

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from tf_serving.server.cli import main  # noqa: E402

sys.exit(main())
