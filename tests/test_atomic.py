"""wdl_tf.atomic: a reader sees the old file or the whole new one; a failed write leaves no
trace."""

import json
import os

import numpy as np
import pytest

from wdl_tf import atomic


def test_write_json_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = str(tmp_path / "sub" / "metrics.json")  # the directory is created
    atomic.write_json(path, {"auc": 0.5})
    atomic.write_json(path, {"auc": 0.75, "n": 3})
    with open(path) as f:
        assert json.load(f) == {"auc": 0.75, "n": 3}
    assert os.listdir(tmp_path / "sub") == ["metrics.json"]
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "state.json")
    atomic.write_text(path, "old")
    with pytest.raises(TypeError, match="not JSON serializable"):
        atomic.write_json(path, {"bad": object()})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert open(path).read() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_path_keeps_the_extension_for_path_based_writers(tmp_path):
    path = str(tmp_path / "split.npz")
    with atomic.atomic_path(path) as tmp:
        assert tmp.endswith("split.npz") and os.path.dirname(tmp) == str(tmp_path)
        assert os.path.basename(tmp).startswith(".")  # hidden from globs of the real name
        np.savez(tmp, x=np.arange(3))  # np.savez would append .npz to any other name
    np.testing.assert_array_equal(np.load(path)["x"], [0, 1, 2])
    assert os.listdir(tmp_path) == ["split.npz"]
