"""tf_serving/config.py and the launch plans of scripts/serve.py (tf_serving/launch.py): config
files round-trip, bad values are named."""

import os

import pytest
from google.protobuf import text_format
from helpers import run_script
from tensorflow_serving.config import model_server_config_pb2

from tf_serving import config as cfg
from tf_serving import launch

# ----------------------------------------------------------------------------------------
# models.config


def test_models_config_round_trips_through_text_format():
    models = [
        cfg.ServedModel("census", "/models/census", version_policy="latest", num_versions=2),
        cfg.ServedModel(
            "census_ab",
            "/models/census",
            version_policy="specific",
            versions=(42, 43),
            version_labels={"stable": 42, "canary": 43},
        ),
        cfg.ServedModel("everything", "/models/x", version_policy="all"),
    ]
    text = cfg.models_config_text(models)
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    entries = parsed.model_config_list.config
    assert [e.name for e in entries] == ["census", "census_ab", "everything"]
    assert all(e.model_platform == "tensorflow" for e in entries)
    assert entries[0].base_path == "/models/census"
    assert entries[0].model_version_policy.latest.num_versions == 2
    assert list(entries[1].model_version_policy.specific.versions) == [42, 43]
    assert dict(entries[1].version_labels) == {"stable": 42, "canary": 43}
    assert entries[2].model_version_policy.WhichOneof("policy_choice") == "all"
    # And back to the dataclasses, and to the same text.
    assert cfg.parse_models_config(text) == models
    assert cfg.models_config_text(cfg.parse_models_config(text)) == text


def test_models_config_parses_the_documented_example():
    text = """
    model_config_list {
      config {
        name: 'wide_deep'
        base_path: '/models/wide_deep'
        model_platform: 'tensorflow'
        model_version_policy { specific { versions: 42 versions: 43 } }
        version_labels { key: 'stable' value: 42 }
        version_labels { key: 'canary' value: 43 }
      }
    }"""
    (model,) = cfg.parse_models_config(text)
    assert model.version_policy == "specific" and model.versions == (42, 43)
    assert model.version_labels == {"stable": 42, "canary": 43}
    # A missing policy is TF Serving's default: the latest version.
    (model,) = cfg.parse_models_config("model_config_list { config { name: 'a' base_path: '/a' } }")
    assert (model.version_policy, model.num_versions) == ("latest", 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"version_policy": "newest"}, "unknown version_policy 'newest'"),
        (
            {"version_policy": "specific", "versions": (1, 2), "version_labels": {"canary": 7}},
            "version_labels['canary'] = 7 is not one of the specific policy's versions [1, 2]",
        ),
        ({"versions": (3,)}, "versions=[3] only apply to version_policy 'specific'"),
        ({"version_policy": "specific"}, "'specific' needs versions"),
        ({"version_policy": "specific", "versions": (1, 1)}, "duplicate versions in [1, 1]"),
        ({"version_policy": "specific", "versions": (-4,)}, "version -4 must be an integer"),
        ({"num_versions": 0}, "num_versions must be >= 1, got 0"),
        ({"version_labels": {"my-label": 1}}, "version label 'my-label' must match"),
        ({"version_labels": {"stable": "one"}}, "version_labels['stable'] = 'one'"),
        ({"base_path": ""}, "base_path must not be empty"),
        ({"name": "a/b"}, "model name 'a/b'"),
        ({"name": "a:b"}, "model name 'a:b'"),
    ],
)
def test_models_config_validation_names_the_bad_value(kwargs, message):
    args = {"name": "census", "base_path": "/models/census", **kwargs}
    with pytest.raises(cfg.ConfigError) as e:
        cfg.models_config_text(cfg.ServedModel(**args))
    assert message in str(e.value)


def test_models_config_rejects_duplicates_and_bad_text():
    m = cfg.ServedModel("census", "/m")
    with pytest.raises(cfg.ConfigError, match=r"duplicate model names \['census'\]"):
        cfg.models_config_text([m, m])
    with pytest.raises(cfg.ConfigError, match="at least one model"):
        cfg.models_config_text([])
    with pytest.raises(cfg.ConfigError, match="Error parsing text-format .*ModelServerConfig"):
        cfg.parse_models_config("model_config_list { config { nmae: 'x' } }")
    with pytest.raises(cfg.ConfigError, match="unknown version_policy|'specific' needs"):
        cfg.parse_models_config(
            "model_config_list { config { name: 'a' base_path: '/a' "
            "model_version_policy { specific { } } } }"
        )


# ----------------------------------------------------------------------------------------
# batching_parameters.txt and monitoring.config


def test_batching_parameters_text_and_round_trip():
    params = cfg.BatchingParameters(
        max_batch_size=128,
        batch_timeout_micros=0,
        max_enqueued_batches=1000000,
        num_batch_threads=8,
        allowed_batch_sizes=(16, 64, 128),
    )
    text = cfg.batching_parameters_text(params)
    assert text.splitlines()[:4] == [
        "max_batch_size { value: 128 }",
        "batch_timeout_micros { value: 0 }",
        "max_enqueued_batches { value: 1000000 }",
        "num_batch_threads { value: 8 }",
    ]
    assert "allowed_batch_sizes: 16\nallowed_batch_sizes: 64\nallowed_batch_sizes: 128" in text
    assert cfg.parse_batching_parameters(text) == params
    # TF Serving's own test file parses to the same values.
    official = (
        "max_batch_size { value: 128 } batch_timeout_micros { value: 0 } "
        "max_enqueued_batches { value: 1000000 } num_batch_threads { value: 8 }"
    )
    parsed = cfg.parse_batching_parameters(official)
    assert (parsed.max_batch_size, parsed.num_batch_threads, parsed.allowed_batch_sizes) == (
        128,
        8,
        (),
    )
    with pytest.raises(cfg.ConfigError, match="Error parsing text-format .*BatchingParameters"):
        cfg.parse_batching_parameters("max_batch_size: 12")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"allowed_batch_sizes": (32, 16, 128)},
            "allowed_batch_sizes [32, 16, 128]: must be increasing, but 16 follows 32",
        ),
        (
            {"allowed_batch_sizes": (16, 64)},
            "the last one (64) must equal max_batch_size (128)",
        ),
        ({"allowed_batch_sizes": (0, 128)}, "allowed_batch_sizes: 0 must be an integer >= 1"),
        ({"num_batch_threads": 0}, "num_batch_threads: must be an integer >= 1, got 0"),
        ({"max_batch_size": -1}, "max_batch_size: must be an integer >= 1, got -1"),
        ({"batch_timeout_micros": 1.5}, "batch_timeout_micros: must be an integer >= 0, got 1.5"),
    ],
)
def test_batching_validation_names_the_bad_value(kwargs, message):
    with pytest.raises(cfg.ConfigError) as e:
        cfg.batching_parameters_text(cfg.BatchingParameters(**kwargs))
    assert message in str(e.value)


def test_monitoring_config():
    text = cfg.monitoring_config_text()
    assert text == 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'
    assert cfg.parse_monitoring_config(text) == (True, "/monitoring/prometheus/metrics")
    assert cfg.parse_monitoring_config("prometheus_config { enable: true }") == (
        True,
        cfg.DEFAULT_PROMETHEUS_PATH,
    )
    with pytest.raises(cfg.ConfigError, match="monitoring path 'metrics'"):
        cfg.monitoring_config_text("metrics")


# ----------------------------------------------------------------------------------------
# Files and commands.


def test_write_server_files_is_atomic_and_complete(tmp_path):
    model = cfg.ServedModel("census", str(tmp_path / "export"))
    files = cfg.write_server_files(str(tmp_path / "cfg"), model, cfg.BatchingParameters())
    assert files.model_config_file == str(tmp_path / "cfg" / "models.config")
    assert cfg.parse_models_config(open(files.model_config_file).read()) == [model]
    assert cfg.parse_batching_parameters(open(files.batching_parameters_file).read()) == (
        cfg.BatchingParameters()
    )
    assert cfg.parse_monitoring_config(open(files.monitoring_config_file).read())[0]
    # Rewriting replaces the file; no temp files are left behind.
    cfg.write_models_config(files.model_config_file, cfg.ServedModel("other", "/x"))
    assert cfg.parse_models_config(open(files.model_config_file).read())[0].name == "other"
    assert sorted(os.listdir(tmp_path / "cfg")) == [
        "batching_parameters.txt",
        "models.config",
        "monitoring.config",
    ]
    # Without batching/monitoring, only models.config; a given config file is used as is.
    files = cfg.write_server_files(
        str(tmp_path / "c2"), None, monitoring=False, model_config_file=files.model_config_file
    )
    assert files.batching_parameters_file is None and files.monitoring_config_file is None
    assert not os.path.exists(tmp_path / "c2" / "models.config")
    with pytest.raises(cfg.ConfigError, match="'/no/such.config' does not exist"):
        cfg.write_server_files(str(tmp_path), None, model_config_file="/no/such.config")


def test_server_command_has_the_real_servers_flags():
    files = cfg.ServerFiles("/c/models.config", "/c/batching.txt", "/c/monitoring.config")
    assert cfg.server_command(files, binary="/usr/bin/tensorflow_model_server") == [
        "/usr/bin/tensorflow_model_server",
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/c/models.config",
        "--enable_batching",
        "--batching_parameters_file=/c/batching.txt",
        "--monitoring_config_file=/c/monitoring.config",
        "--file_system_poll_wait_seconds=1",
    ]
    cmd = cfg.server_command(cfg.ServerFiles("/c/m"), port=9000, rest_api_port=9001)
    assert cmd == [
        "tensorflow_model_server",
        "--port=9000",
        "--rest_api_port=9001",
        "--model_config_file=/c/m",
        "--file_system_poll_wait_seconds=1",
    ]
    with pytest.raises(cfg.ConfigError, match="port: must be a port number in 1..65535, got 0"):
        cfg.server_command(files, port=0)


def test_docker_command_mounts_models_and_config():
    models = [cfg.ServedModel("census", "/data/export")]
    cmd = cfg.docker_command(models, "/tmp/cfg", batching=True, port=9500, rest_api_port=9501)
    image = cmd.index("tensorflow/serving")
    assert cmd[:3] == ["docker", "run", "--rm"]
    assert "127.0.0.1:9500:8500" in cmd and "127.0.0.1:9501:8501" in cmd
    assert "type=bind,source=/data/export,target=/models/census,readonly" in cmd
    assert "type=bind,source=/tmp/cfg,target=/models/_config,readonly" in cmd
    assert cmd[image - 1] == "-t"
    assert cmd[image + 1 :] == [
        "--model_config_file=/models/_config/models.config",
        "--enable_batching",
        "--batching_parameters_file=/models/_config/batching_parameters.txt",
        "--monitoring_config_file=/models/_config/monitoring.config",
        "--file_system_poll_wait_seconds=1",
    ]
    assert "-p" in cfg.docker_command(models, "/c", host="0.0.0.0")
    assert "8500:8500" in cfg.docker_command(models, "/c", host="0.0.0.0")
    assert cfg.for_container(models)[0].base_path == "/models/census"


# ----------------------------------------------------------------------------------------
# scripts/serve.py's plans (tf_serving/launch.py)


def test_serve_plan_real_docker_and_local(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    batching = cfg.BatchingParameters(max_batch_size=64, allowed_batch_sizes=(8, 64))

    plan = launch.make_plan(
        model_base_path=str(export),
        config_dir=str(tmp_path / "real"),
        batching=batching,
        binary="/opt/tfs/tensorflow_model_server",
    )
    assert plan.kind == "real"
    assert plan.command[0] == "/opt/tfs/tensorflow_model_server"
    config_file = str(tmp_path / "real" / "models.config")
    assert f"--model_config_file={config_file}" in plan.command
    assert "--enable_batching" in plan.command
    assert "--file_system_poll_wait_seconds=1" in plan.command
    (model,) = cfg.parse_models_config(open(config_file).read())
    assert (model.name, model.base_path) == ("census", str(export))
    assert cfg.parse_batching_parameters(open(plan.files.batching_parameters_file).read()) == (
        batching
    )

    plan = launch.make_plan(
        model_base_path=str(export), config_dir=str(tmp_path / "docker"), docker=True
    )
    assert plan.kind == "docker" and plan.command[0] == "docker"
    (model,) = cfg.parse_models_config(open(tmp_path / "docker" / "models.config").read())
    assert model.base_path == "/models/census"
    assert f"type=bind,source={export},target=/models/census,readonly" in plan.command
    assert "--enable_batching" not in plan.command

    # A given models.config is used by the real server as is, and rewritten for Docker.
    plan = launch.make_plan(
        model_config_file=config_file, config_dir=str(tmp_path / "r2"), binary="tfs"
    )
    assert f"--model_config_file={config_file}" in plan.command
    plan = launch.make_plan(
        model_config_file=config_file, config_dir=str(tmp_path / "d2"), docker=True
    )
    assert "--model_config_file=/models/_config/models.config" in plan.command

    for kwargs in ({}, {"binary": "tfs", "local": True}):
        plan = launch.make_plan(model_base_path=str(export), port=9000, **kwargs)
        assert plan.kind == "local"
        assert plan.local_kwargs == {
            "model_name": "census",
            "model_base_path": str(export),
            "model_config_file": None,
            "port": 9000,
            "rest_api_port": 8501,
            "host": "127.0.0.1",
            "batching": None,
            "monitoring": True,
            "allow_version_labels_for_unavailable_models": False,
        }
    plan = launch.make_plan(
        model_base_path=str(export),
        monitoring=False,
        local=True,
        model_config_file_poll_wait_seconds=5,
        local_limits={"max_body_bytes": 1024, "max_in_flight_requests": None},
    )
    assert plan.local_kwargs["monitoring"] is False  # --monitoring reaches the local server
    assert plan.local_kwargs["max_body_bytes"] == 1024
    assert plan.local_kwargs["model_config_file_poll_wait_seconds"] == 5
    assert "max_in_flight_requests" not in plan.local_kwargs  # unset: the server's default
    with pytest.raises(ValueError, match="--max_body_bytes: only the local server"):
        launch.make_plan(
            model_base_path=str(export), binary="tfs", local_limits={"max_body_bytes": 1}
        )
    # Every limit serve.py offers is a keyword of the local server it is passed to.
    import inspect

    from tf_serving.server import ModelServer

    assert set(launch.LOCAL_LIMITS) <= set(inspect.signature(ModelServer).parameters)
    with pytest.raises(ValueError, match="--max_decoded_bytes: only the local server"):
        launch.make_plan(
            model_base_path=str(export), binary="tfs", local_limits={"max_decoded_bytes": 1}
        )
    plan = launch.make_plan(
        model_base_path=str(export),
        binary="tfs",
        config_dir=str(tmp_path / "r3"),
        model_config_file_poll_wait_seconds=5,
        allow_version_labels_for_unavailable_models=True,
    )
    assert "--model_config_file_poll_wait_seconds=5" in plan.command
    assert "--allow_version_labels_for_unavailable_models=true" in plan.command

    with pytest.raises(ValueError, match="exactly one of --model_base_path"):
        launch.make_plan(model_base_path=str(export), model_config_file=config_file)
    with pytest.raises(ValueError, match="exclude each other"):
        launch.make_plan(model_base_path=str(export), docker=True, local=True)
    with pytest.raises(cfg.ConfigError, match="model name 'a/b'"):
        launch.make_plan(model_base_path=str(export), model_name="a/b", binary="tfs")


@pytest.mark.slow
def test_serve_script_dry_run_prints_the_docker_command(tmp_path):
    proc = run_script(
        "serve",
        f"--model_base_path={tmp_path}",
        "--docker",
        "--dry_run",
        "--enable_batching",
        "--allowed_batch_sizes=32,16,128",
        f"--config_dir={tmp_path}/cfg",
        timeout=60,
    )
    assert proc.returncode != 0
    assert "must be increasing, but 16 follows 32" in proc.stderr
    proc = run_script(
        "serve",
        f"--model_base_path={tmp_path}",
        "--docker",
        "--dry_run",
        f"--config_dir={tmp_path}/cfg",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("docker run --rm -p 127.0.0.1:8500:8500")
    assert "-t tensorflow/serving --model_config_file=/models/_config/models.config" in proc.stdout
    assert os.path.isfile(tmp_path / "cfg" / "monitoring.config")
